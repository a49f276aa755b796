"""``SpectrumBatch``: B spectra on one wavelength grid, the object every stage passes on.

Conversion to and from Arrow tables is copy-free for the (B, L) tensor columns, and
:func:`find_problems` holds the row rules that writing, reading and ingestion all apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..errors import SpectraError
from .manifest import Manifest
from .schema import (
    ID_COLUMN,
    MODEL_FLUX,
    TENSOR_DTYPES,
    UNUSABLE,
    tensor_to_numpy,
    to_tensor_array,
)


@dataclass
class SpectrumBatch:
    """B spectra on a common grid of L pixels.

    flux, sigma: (B, L) float32 in the dataset's flux unit; mask: (B, L) uint8
    :class:`~stellar_ray.spectra.schema.MaskBit` flags; labels: name -> (B,) float64 with
    NaN for unknown (or None for unlabelled spectra); metadata: name -> (B,) array.
    """

    spectrum_id: np.ndarray
    flux: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray
    labels: dict[str, np.ndarray] | None = None
    metadata: dict[str, np.ndarray] = field(default_factory=dict)
    model_flux: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.spectrum_id = np.asarray(self.spectrum_id, dtype=object)
        self.flux = np.ascontiguousarray(self.flux, dtype=np.float32)
        if self.model_flux is not None:
            self.model_flux = np.ascontiguousarray(self.model_flux, dtype=np.float32)
            if self.model_flux.shape != self.flux.shape:
                raise SpectraError(f"shape {self.model_flux.shape}, flux has "
                                   f"{self.flux.shape}", field=MODEL_FLUX)
        self.sigma = np.ascontiguousarray(self.sigma, dtype=np.float32)
        self.mask = np.ascontiguousarray(self.mask, dtype=np.uint8)
        b = len(self.spectrum_id)
        for name in ("flux", "sigma", "mask"):
            arr = getattr(self, name)
            if arr.ndim != 2 or arr.shape[0] != b:
                raise SpectraError(f"shape {arr.shape}, expected ({b}, L)", field=name)
        if not (self.flux.shape == self.sigma.shape == self.mask.shape):
            raise SpectraError(
                f"flux {self.flux.shape}, sigma {self.sigma.shape} and mask "
                f"{self.mask.shape} differ", field="flux"
            )

    def __len__(self) -> int:
        return len(self.spectrum_id)

    @property
    def npix(self) -> int:
        return self.flux.shape[1]

    def take(self, rows: np.ndarray | Sequence[int]) -> SpectrumBatch:
        """The spectra at ``rows`` (indices or a boolean mask)."""
        rows = np.asarray(rows)
        return SpectrumBatch(
            spectrum_id=self.spectrum_id[rows],
            flux=self.flux[rows],
            sigma=self.sigma[rows],
            mask=self.mask[rows],
            labels=None if self.labels is None else {k: v[rows] for k, v in self.labels.items()},
            metadata={k: np.asarray(v)[rows] for k, v in self.metadata.items()},
            model_flux=None if self.model_flux is None else self.model_flux[rows],
        )

    @classmethod
    def from_numpy_rows(cls, rows: dict[str, np.ndarray], label_names: set[str] | Sequence[str]
                        ) -> SpectrumBatch:
        """A Ray Data numpy batch of dataset rows as a batch: columns in ``label_names``
        are labels, the other scalar columns metadata."""
        names = set(label_names)
        return cls(
            spectrum_id=rows["spectrum_id"], flux=np.stack(rows["flux"]),
            sigma=np.stack(rows["sigma"]), mask=np.stack(rows["mask"]),
            labels={k: v for k, v in rows.items() if k in names},
            metadata={k: v for k, v in rows.items() if k not in names
                      and k not in ("spectrum_id", "flux", "sigma", "mask", MODEL_FLUX)},
            model_flux=np.stack(rows[MODEL_FLUX]) if MODEL_FLUX in rows else None)

    def numpy_rows(self) -> dict[str, np.ndarray]:
        """The batch as a Ray Data numpy batch of dataset rows (the inverse of
        :meth:`from_numpy_rows`)."""
        rows = {"spectrum_id": self.spectrum_id, "flux": self.flux, "sigma": self.sigma,
                "mask": self.mask, **(self.labels or {}), **self.metadata}
        if self.model_flux is not None:
            rows[MODEL_FLUX] = self.model_flux
        return rows

    @classmethod
    def concat(cls, batches: Sequence[SpectrumBatch]) -> SpectrumBatch:
        if not batches:
            raise ValueError("nothing to concatenate")
        labelled = [b.labels for b in batches if b.labels is not None]
        label_names = sorted({k for lab in labelled for k in lab})
        b0 = batches[0]

        def labels_of(b: SpectrumBatch, name: str) -> np.ndarray:
            if b.labels is not None and name in b.labels:
                return np.asarray(b.labels[name], dtype=np.float64)
            return np.full(len(b), np.nan)

        meta_names = sorted({k for b in batches for k in b.metadata})
        return cls(
            spectrum_id=np.concatenate([b.spectrum_id for b in batches]),
            flux=np.concatenate([b.flux for b in batches]),
            sigma=np.concatenate([b.sigma for b in batches]),
            mask=np.concatenate([b.mask for b in batches]),
            labels={n: np.concatenate([labels_of(b, n) for b in batches]) for n in label_names}
            if labelled else b0.labels,
            metadata={
                n: np.concatenate([
                    np.asarray(b.metadata[n]) if n in b.metadata
                    else np.full(len(b), None, dtype=object) for b in batches
                ])
                for n in meta_names
            },
            model_flux=np.concatenate([b.model_flux for b in batches])
            if all(b.model_flux is not None for b in batches) else None,
        )

    def to_arrow(self, manifest: Manifest) -> pa.Table:
        """The batch as a table with exactly ``manifest.arrow_schema()``.

        Labels and metadata not given are null; names the manifest does not know are an
        error.
        """
        schema = manifest.arrow_schema()
        if self.npix != manifest.npix:
            raise SpectraError(
                f"{self.npix} pixels per spectrum, the dataset grid has {manifest.npix}",
                field="flux",
            )
        known = set(schema.names)
        for name in list(self.metadata) + list(self.labels or {}):
            if name not in known:
                raise SpectraError(
                    "not a column of this dataset (declare it as a label or extra metadata "
                    "in the manifest)", field=name
                )
        columns: dict[str, pa.Array] = {
            ID_COLUMN: pa.array(self.spectrum_id, type=pa.string()),
        }
        for name in ("flux", "sigma", "mask"):
            columns[name] = to_tensor_array(getattr(self, name), TENSOR_DTYPES[name])
        if manifest.model_flux:
            if self.model_flux is None:
                raise SpectraError("the dataset keeps noiseless flux; the batch has none",
                                   field=MODEL_FLUX)
            columns[MODEL_FLUX] = to_tensor_array(self.model_flux, np.float32)
        b = len(self)
        for f in schema:
            if f.name in columns:
                continue
            source = self.labels if f.name in manifest.label_names else self.metadata
            values = None if source is None else source.get(f.name)
            if values is None:
                columns[f.name] = pa.nulls(b, type=f.type)
            else:
                values = np.asarray(values)
                arr = pa.array(values, from_pandas=True)
                columns[f.name] = arr.cast(f.type) if arr.type != f.type else arr
        return pa.Table.from_pydict(columns, schema=schema)

    @classmethod
    def from_arrow(cls, table: pa.Table | pa.RecordBatch, manifest: Manifest | None = None
                   ) -> SpectrumBatch:
        """A batch from a table of the row schema (any Arrow tensor type for the pixels).

        With a manifest, labels and metadata are told apart by its label names; without,
        every column named in ``labels`` of the table's own metadata is unknown, so all
        non-pixel columns land in ``metadata``.
        """
        names = set(table.column_names)
        label_names = manifest.label_names if manifest is not None else []
        labels = {n: _to_numpy(table.column(n)) for n in label_names if n in names} or None
        pixel_columns = (ID_COLUMN, "flux", "sigma", "mask", MODEL_FLUX)
        meta = {
            n: _to_numpy(table.column(n))
            for n in table.column_names
            if n not in pixel_columns and n not in label_names
        }
        return cls(
            spectrum_id=_to_numpy(table.column(ID_COLUMN)),
            flux=tensor_to_numpy(table.column("flux")),
            sigma=tensor_to_numpy(table.column("sigma")),
            mask=tensor_to_numpy(table.column("mask")),
            labels=labels,
            metadata=meta,
            model_flux=tensor_to_numpy(table.column(MODEL_FLUX))
            if MODEL_FLUX in names else None,
        )


def _to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A scalar column as numpy (nulls become NaN for floats, None for strings)."""
    if isinstance(column, pa.ChunkedArray):
        return column.to_numpy()
    return column.to_numpy(zero_copy_only=False)


@dataclass(frozen=True)
class Problem:
    """One broken rule: which row (0-based within the batch), which field, and why."""

    row: int
    field: str
    reason: str


def find_problems(
    spectrum_id: np.ndarray,
    flux: np.ndarray,
    sigma: np.ndarray,
    mask: np.ndarray,
    uncertainties: str = "measured",
) -> list[Problem]:
    """Every row that breaks the row rules, at most one problem per row (the first found).

    Rules: a non-empty unique ``spectrum_id``; finite flux everywhere (unusable pixels
    hold 0); on usable pixels a finite sigma > 0; on unusable pixels sigma > 0 (+inf means
    no information); for noiseless datasets (``uncertainties='none'``) sigma == 0.
    """
    problems: dict[int, Problem] = {}

    def flag(rows: np.ndarray, field: str, describe) -> None:
        for r in rows:
            r = int(r)
            if r not in problems:
                problems[r] = Problem(r, field, describe(r))

    ids = np.asarray(spectrum_id, dtype=object)
    empty = np.flatnonzero([(i is None) or (str(i) == "") for i in ids])
    flag(empty, ID_COLUMN, lambda r: "empty spectrum_id")
    text = ids.astype(str)
    order = np.argsort(text, kind="stable")
    sorted_ids = text[order]
    dup_sorted = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1]) + 1
    dups = order[dup_sorted]
    flag(dups, ID_COLUMN, lambda r: f"duplicate spectrum_id '{ids[r]}'")

    bad_flux = ~np.isfinite(flux)
    rows = np.flatnonzero(bad_flux.any(axis=1))
    flag(rows, "flux", lambda r: _pixel_reason(bad_flux[r], flux[r], "non-finite flux"))

    if uncertainties == "none":
        nonzero = sigma != 0
        rows = np.flatnonzero(nonzero.any(axis=1))
        flag(rows, "sigma", lambda r: _pixel_reason(
            nonzero[r], sigma[r], "sigma must be 0 in a noiseless dataset"))
    else:
        usable = (mask & np.uint8(UNUSABLE)) == 0
        bad_sigma = ~(sigma > 0) | (usable & ~np.isfinite(sigma))
        rows = np.flatnonzero(bad_sigma.any(axis=1))
        flag(rows, "sigma", lambda r: _pixel_reason(
            bad_sigma[r], sigma[r], "sigma must be finite and > 0 (or +inf on masked pixels)"))
    return [problems[r] for r in sorted(problems)]


def _pixel_reason(bad: np.ndarray, values: np.ndarray, what: str) -> str:
    idx = np.flatnonzero(bad)
    return f"{what} at {idx.size} pixel(s), first at pixel {idx[0]} (value {values[idx[0]]})"


def check_batch(batch: SpectrumBatch, manifest: Manifest, source: str | None = None,
                row_offset: int = 0) -> None:
    """Raise :class:`SpectraError` naming the first row that breaks the row rules."""
    if batch.npix != manifest.npix:
        raise SpectraError(
            f"{batch.npix} pixels per spectrum, the dataset grid has {manifest.npix}",
            file=source, field="flux",
        )
    problems = find_problems(batch.spectrum_id, batch.flux, batch.sigma, batch.mask,
                             manifest.uncertainties)
    if problems:
        p = problems[0]
        extra = f" (and {len(problems) - 1} more rows)" if len(problems) > 1 else ""
        raise SpectraError(p.reason + extra, file=source, row=row_offset + p.row, field=p.field)
