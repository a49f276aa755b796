"""``stellar-ray catalog to-fits``: a catalog as one FITS binary table (astropy), for the
tools astronomers use (TOPCAT, fitsio, IDL). Units of the known labels go into TUNITn."""

from __future__ import annotations

import io
import re

import numpy as np
import pyarrow as pa
from astropy.io import fits
from astropy.table import Table

from ..simulate.labels import LABELS
from .catalog import load_catalog_manifest, read_catalog
from .storage import resolve, write_bytes_atomic

_UNITS = {lab.name: lab.unit for lab in LABELS} | {"rv": "km / s", "broadening": "km / s"}
_SUFFIX = re.compile(r"_(err|q[0-9.]+)$")


def _unit(column: str) -> str | None:
    """The unit of a catalog column: that of its label (``teff``, ``teff_err``,
    ``teff_q16``, ``input_teff``)."""
    return _UNITS.get(_SUFFIX.sub("", column.removeprefix("input_"))) or None


def _column(array: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return np.array([v if v is not None else "" for v in array.to_pylist()], dtype=str)
    return array.to_numpy(zero_copy_only=False)


def catalog_table(url: str, storage_options: dict | None = None) -> Table:
    """The catalog at ``url`` as an astropy Table with the provenance in meta."""
    table = read_catalog(url, storage_options)
    out = Table({name: _column(table.column(name)) for name in table.column_names})
    manifest = load_catalog_manifest(url, storage_options)
    if manifest.provenance:
        out.meta["PRODUCER"] = manifest.provenance.producer[:68]
        out.meta["CODEVER"] = manifest.provenance.code_version[:68]
    return out


def catalog_to_fits(url: str, to: str, storage_options: dict | None = None) -> int:
    """Write the catalog at ``url`` as a FITS file at ``to`` (atomically); returns rows."""
    table = catalog_table(url, storage_options)
    hdu = fits.BinTableHDU(table, name="CATALOG")
    # TUNITn written as text: FITS has no 'dex', which astropy's unit writer refuses
    for i, name in enumerate(table.colnames, start=1):
        if unit := _unit(name):
            hdu.header[f"TUNIT{i}"] = unit
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    fs, path = resolve(to, storage_options)
    write_bytes_atomic(fs, path, buffer.getvalue())
    return len(table)
