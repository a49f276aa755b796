"""Labels from a separate catalog, joined to spectra by id.

The catalog is any table astropy reads (CSV; whitespace-separated text with a header line or
a ``#`` comment header; FITS tables; VOTable) or Parquet. One column holds the id; the
labels are the columns named in the label map (dataset label -> catalog column), or else
the columns whose names are known label spellings (``Teff``, ``logg``, ``[Fe/H]`` ...).
Sentinel values (e.g. 9999) and masked entries become nulls. Units come from the table
where it states them (converted to the label's default unit when they are compatible),
else the label's default.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
from astropy import units as u
from astropy.io import ascii as astropy_ascii
from astropy.table import Table
from pydantic import BaseModel, ConfigDict, Field

from ...errors import SpectraError
from ...quantities import LABEL_UNITS, default_unit
from ..storage import read_bytes, resolve
from .ids import apply_id_pattern, id_key_for_matching
from .raw import LABEL_ALIASES, canonical_label

_KNOWN_LABELS = set(LABEL_ALIASES.values()) | set(LABEL_UNITS)


class LabelCatalogOptions(BaseModel):
    """``--labels FILE --labels-id COLUMN [--label-map a=B,...] [--missing 9999,...]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="URL of the catalog file")
    id_column: str
    label_map: dict[str, str] = Field(default_factory=dict,
                                      description="dataset label -> catalog column")
    missing: list[float] = Field(default_factory=list, description="sentinels meaning null")
    format: str | None = Field(default=None, description="astropy format; default: by suffix")


@dataclass
class LabelCatalog:
    """A catalog read and checked: (M,) float64 label columns (NaN = null) keyed by id."""

    source: str
    index: dict[str, int]
    labels: dict[str, np.ndarray]
    units: dict[str, str | None]

    def lookup(self, spectrum_id: str, pattern: re.Pattern | None = None
               ) -> tuple[str, int] | None:
        """(join key, catalog row) of a spectrum, its id cut by ``pattern`` first; None when
        the catalog has no row for it (or the pattern does not match)."""
        try:
            key = id_key_for_matching(apply_id_pattern(spectrum_id, pattern, self.source))
        except SpectraError:
            return None
        row = self.index.get(key)
        return None if row is None else (key, row)

    def labels_of(self, row: int) -> dict[str, float]:
        return {name: float(col[row]) for name, col in self.labels.items()}


def _table(data: bytes, path: str, options: LabelCatalogOptions) -> Table:
    lower = path.lower()
    fmt = options.format
    if fmt is None and lower.endswith(".parquet"):
        return Table(pq.read_table(io.BytesIO(data)).to_pydict())
    if fmt is None and lower.endswith((".fits", ".fit", ".fits.gz", ".fts")):
        fmt = "fits"
    if fmt is None and lower.endswith((".vot", ".xml", ".votable")):
        fmt = "votable"
    if fmt is not None:
        return Table.read(io.BytesIO(data), format=fmt)
    text = data.decode("utf-8", "replace")
    converters = {options.id_column: [astropy_ascii.convert_numpy(str)]}
    if lower.endswith(".csv"):
        return astropy_ascii.read(text, format="csv", guess=False, converters=converters)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    comments = next((i for i, ln in enumerate(lines) if not ln.lstrip().startswith("#")),
                    len(lines))
    delimiter = "," if lines and "," in lines[min(comments, len(lines) - 1)] else None
    kw = {"delimiter": delimiter} if delimiter else {}
    if comments > 0:  # the header is the last comment line before the data
        return astropy_ascii.read(text, format="commented_header", header_start=comments - 1,
                                  guess=False, converters=converters, **kw)
    return astropy_ascii.read(text, format="basic", guess=False, converters=converters, **kw)


def read_label_catalog(options: LabelCatalogOptions, storage_options: dict | None = None
                       ) -> LabelCatalog:
    """Read, check and index a label catalog; errors name the file, row and column."""
    fs, path = resolve(options.path, storage_options)
    try:
        data = read_bytes(fs, path)
    except FileNotFoundError as err:
        raise SpectraError("no such label catalog", file=options.path) from err
    try:
        table = _table(data, path, options)
    except SpectraError:
        raise
    except Exception as err:  # noqa: BLE001 - astropy's readers raise many kinds
        raise SpectraError(f"cannot read the label catalog ({err})", file=options.path) from err
    columns = {c.lower(): c for c in table.colnames}
    if options.id_column.lower() not in columns:
        raise SpectraError(f"no id column '{options.id_column}' (the catalog has "
                           f"{table.colnames})", file=options.path, field=options.id_column)
    id_col = columns[options.id_column.lower()]
    wanted = _label_columns(table, id_col, options, columns)
    index: dict[str, int] = {}
    for row, value in enumerate(table[id_col]):
        key = id_key_for_matching(value)
        if key in index:
            raise SpectraError(f"id '{value}' appears twice (rows {index[key]} and {row})",
                               file=options.path, row=row, field=id_col)
        index[key] = row
    labels, units = {}, {}
    for name, col in wanted.items():
        labels[name], units[name] = _values(table[col], name, col, options)
    return LabelCatalog(source=options.path, index=index, labels=labels, units=units)


def _label_columns(table: Table, id_col: str, options: LabelCatalogOptions,
                   columns: dict[str, str]) -> dict[str, str]:
    """Dataset label -> catalog column."""
    if options.label_map:
        out = {}
        for label, col in options.label_map.items():
            if col.lower() not in columns:
                raise SpectraError(f"--label-map names column '{col}', not in the catalog "
                                   f"({table.colnames})", file=options.path, field=col)
            out[canonical_label(label)] = columns[col.lower()]
        return out
    out = {canonical_label(c): c for c in table.colnames
           if c != id_col and canonical_label(c) in _KNOWN_LABELS}
    if not out:
        raise SpectraError(f"no label columns recognised in {table.colnames}; name them with "
                           "--label-map teff=COL,...", file=options.path)
    return out


def _values(column, label: str, name: str, options: LabelCatalogOptions
            ) -> tuple[np.ndarray, str | None]:
    """(M,) float64 values with nulls as NaN, in the label's default unit where the table's
    unit converts to it; and the unit recorded for the label."""
    try:
        values = np.ma.filled(np.ma.asarray(column, dtype=np.float64), np.nan)
    except (TypeError, ValueError) as err:
        bad = next((i for i, v in enumerate(column) if not _is_number(v)), None)
        raise SpectraError(f"label column is not numeric (value '{column[bad]}')",
                           file=options.path, row=bad, field=name) from err
    values = values.astype(np.float64, copy=True)
    if options.missing:
        values[np.isin(values, np.asarray(options.missing, dtype=np.float64))] = np.nan
    default = default_unit(label)
    stated = getattr(column, "unit", None)
    if stated is None or str(stated) == "":
        return values, default
    if default is not None:
        try:
            return (values * u.Unit(stated)).to_value(u.Unit(default)), default
        except (u.UnitConversionError, ValueError, TypeError):
            pass
    return values, str(stated)


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
