"""A result catalog held for browsing: the columns the explorer plots as numpy arrays, with
filters, density images and histograms computed on the server, so that a catalog of
millions of rows never reaches the browser row by row.

Only the label, S/N and flag columns are held (8 bytes per value: a 10⁶-row catalog of
three labels takes ~40 MB); a star's full row is read back from its part when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import SpectraError
from ..inference.quality import CatalogFlag
from ..spectra.catalog import CatalogManifest, load_catalog_manifest, read_part
from ..spectra.schema import ID_COLUMN

#: Above this many selected stars the Kiel diagram is a density image, below it the stars.
MAX_POINTS = 5_000
#: Axis ranges cover these percentiles of the whole catalog (outliers do not squash it).
RANGE_PERCENTILES = (0.1, 99.9)


@dataclass(frozen=True)
class Filter:
    """A selection: S/N within [min_snr, max_snr] (None: open) and none of the flag bits
    in ``exclude_flags``."""

    min_snr: float | None = None
    max_snr: float | None = None
    exclude_flags: int = 0


@dataclass
class Density:
    """Counts (ny, nx) of the selected stars in bins of x and y, and the mean of the
    colour label per bin (NaN where empty); ``x``, ``y`` are the bin centres."""

    x: np.ndarray
    y: np.ndarray
    count: np.ndarray
    colour: np.ndarray


@dataclass(eq=False)  # hashable by identity, for the part cache
class CatalogView:
    """The browsable columns of the catalog at ``url``: ``labels`` (name -> values, the
    columns that have an ``<name>_err`` partner), ``snr`` and ``flags`` (NaN / 0 when the
    catalog lacks them), ``ids``, and where each part's rows start."""

    url: str
    manifest: CatalogManifest
    ids: pa.ChunkedArray
    labels: dict[str, np.ndarray]
    snr: np.ndarray
    flags: np.ndarray
    starts: np.ndarray
    storage_options: dict | None = None
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def open(cls, url: str, storage_options: dict | None = None) -> CatalogView:
        """Read the plotted columns of every part (checksums checked)."""
        manifest = load_catalog_manifest(url, storage_options)
        columns = manifest.columns
        numeric = {n for n, t in columns.items() if t in ("double", "float", "halffloat")}
        names = [n for n in columns if n in numeric and f"{n}_err" in columns]
        if not names:
            raise SpectraError("the catalog has no label columns (a column with a matching "
                               "'<label>_err')", file=url)
        wanted = [ID_COLUMN, *names, *(c for c in ("snr", "flags") if c in columns)]
        tables = [read_part(url, p, storage_options, columns=wanted) for p in manifest.parts]
        table = pa.concat_tables(tables) if tables else None
        n = 0 if table is None else table.num_rows

        def numbers(name: str, default: float) -> np.ndarray:
            if table is None or name not in table.column_names:
                return np.full(n, default)
            return table.column(name).to_numpy().astype(np.float64)

        labels = {name: numbers(name, np.nan) for name in names}
        view = cls(url=url, manifest=manifest,
                   ids=table.column(ID_COLUMN) if table is not None
                   else pa.chunked_array([], pa.string()),
                   labels=labels, snr=numbers("snr", np.nan),
                   flags=numbers("flags", 0).astype(np.int64),
                   starts=np.cumsum([0, *(p.rows for p in manifest.parts)]),
                   storage_options=storage_options)
        for name, values in labels.items():
            finite = values[np.isfinite(values)]
            lo, hi = np.percentile(finite, RANGE_PERCENTILES) if finite.size else (0.0, 1.0)
            view.ranges[name] = (float(lo), float(hi) if hi > lo else float(lo) + 1.0)
        return view

    def __len__(self) -> int:
        return len(self.snr)

    @property
    def units(self) -> dict[str, str]:
        return self.manifest.units

    def select(self, f: Filter) -> np.ndarray:
        """(N,) True for the rows the filter keeps."""
        keep = (self.flags & int(f.exclude_flags)) == 0
        if f.min_snr is not None:
            keep &= self.snr >= f.min_snr
        if f.max_snr is not None:
            keep &= self.snr <= f.max_snr
        return keep

    def density(self, keep: np.ndarray, x: str, y: str, colour: str,
                bins: tuple[int, int] = (160, 120)) -> Density:
        """Counts and mean ``colour`` of the kept rows in a (bins[1], bins[0]) grid over the
        catalog's ranges of ``x`` and ``y``."""
        nx, ny = bins
        (x0, x1), (y0, y1) = self.ranges[x], self.ranges[y]
        xs, ys, cs = self.labels[x], self.labels[y], self.labels[colour]
        ok = keep & np.isfinite(xs) & np.isfinite(ys) & (xs >= x0) & (xs <= x1) \
            & (ys >= y0) & (ys <= y1)
        ix = np.minimum(((xs[ok] - x0) / (x1 - x0) * nx).astype(np.int64), nx - 1)
        iy = np.minimum(((ys[ok] - y0) / (y1 - y0) * ny).astype(np.int64), ny - 1)
        cell = iy * nx + ix
        count = np.bincount(cell, minlength=nx * ny)
        c = cs[ok]
        has = np.isfinite(c)
        total = np.bincount(cell[has], weights=c[has], minlength=nx * ny)
        n_c = np.bincount(cell[has], minlength=nx * ny)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n_c > 0, total / n_c, np.nan)
        return Density(x=x0 + (np.arange(nx) + 0.5) * (x1 - x0) / nx,
                       y=y0 + (np.arange(ny) + 0.5) * (y1 - y0) / ny,
                       count=count.reshape(ny, nx), colour=mean.reshape(ny, nx))

    def histogram(self, keep: np.ndarray, label: str, bins: int = 60
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(bin edges (bins + 1,), counts (bins,)) of ``label`` over the kept rows, on the
        catalog's range of the label."""
        values = self.labels[label][keep]
        counts, edges = np.histogram(values[np.isfinite(values)], bins=bins,
                                     range=self.ranges[label])
        return edges, counts

    def nearest(self, keep: np.ndarray, x: str, xv: float, y: str, yv: float) -> int | None:
        """The kept row nearest to (xv, yv) in the plane of ``x`` and ``y``, each scaled
        by its range (None when nothing is kept)."""
        (x0, x1), (y0, y1) = self.ranges[x], self.ranges[y]
        d = ((self.labels[x] - xv) / (x1 - x0)) ** 2 + ((self.labels[y] - yv) / (y1 - y0)) ** 2
        d = np.where(keep & np.isfinite(d), d, np.inf)
        i = int(np.argmin(d)) if len(d) else -1
        return None if i < 0 or not np.isfinite(d[i]) else i

    def row(self, index: int) -> dict[str, Any]:
        """Every column of row ``index``, read back from its part."""
        k = int(np.searchsorted(self.starts, index, side="right") - 1)
        table = self._part(k)
        return {name: table.column(name)[index - int(self.starts[k])].as_py()
                for name in table.column_names}

    @lru_cache(maxsize=4)  # noqa: B019 - a view lives as long as its dashboard
    def _part(self, k: int) -> pa.Table:
        return read_part(self.url, self.manifest.parts[k], self.storage_options)


def flag_names(flags: int) -> list[str]:
    """The names of the catalog flag bits set in ``flags``."""
    return [f.name for f in CatalogFlag if flags & f.value]
