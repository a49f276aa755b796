"""``stellar-ray catalog to-fits``: a catalog as one FITS binary table (astropy), for the
tools astronomers use (TOPCAT, fitsio, IDL). The units the catalog records go into TUNITn."""

from __future__ import annotations

import io
import re

import numpy as np
import pyarrow as pa
from astropy.io import fits
from astropy.table import Table

from .catalog import load_catalog_manifest, read_catalog
from .storage import resolve, write_bytes_atomic

_QUANTILE = re.compile(r"_q[0-9.]+$")


def column_units(columns: list[str], units: dict[str, str]) -> dict[str, str]:
    """Unit of each catalog column: as recorded, and a quantile column (``teff_q16``) that of
    its label."""
    out = {}
    for name in columns:
        unit = units.get(name) or units.get(_QUANTILE.sub("", name))
        if unit:
            out[name] = unit
    return out


def _column(array: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return np.array([v if v is not None else "" for v in array.to_pylist()], dtype=str)
    return array.to_numpy(zero_copy_only=False)


def catalog_table(url: str, storage_options: dict | None = None) -> tuple[Table, dict]:
    """The catalog at ``url`` as an astropy Table with the provenance in meta, and the
    units of its columns."""
    table = read_catalog(url, storage_options)
    out = Table({name: _column(table.column(name)) for name in table.column_names})
    manifest = load_catalog_manifest(url, storage_options)
    if manifest.provenance:
        out.meta["PRODUCER"] = manifest.provenance.producer[:68]
        out.meta["CODEVER"] = manifest.provenance.code_version[:68]
    return out, column_units(out.colnames, manifest.units)


def catalog_to_fits(url: str, to: str, storage_options: dict | None = None) -> int:
    """Write the catalog at ``url`` as a FITS file at ``to`` (atomically); returns rows."""
    table, units = catalog_table(url, storage_options)
    hdu = fits.BinTableHDU(table, name="CATALOG")
    # TUNITn written as text: FITS has no 'dex', which astropy's unit writer refuses
    for i, name in enumerate(table.colnames, start=1):
        if name in units:
            hdu.header[f"TUNIT{i}"] = units[name]
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    fs, path = resolve(to, storage_options)
    write_bytes_atomic(fs, path, buffer.getvalue())
    return len(table)
