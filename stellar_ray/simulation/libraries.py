"""Building training libraries the SM-Net way (paper 000 §2–3), as ``stellar-ray library``.

* :func:`build_library`: the union of several spectral libraries on one grid, where a
  label combination present in more than one library is kept only from the library with
  the highest priority (first in the list); optionally with the split and the augmentation
  below recorded per spectrum, for training's ``train_column``, ``validation_column`` and
  ``repeat_column``.
* :func:`parameter_split`: the 2-train / 2-validation split in parameter space — along
  each label axis the sorted unique values go two to training, two to validation, and so
  on, the first two and last two values to both; a spectrum is in a split only if all its
  values are, otherwise it is test.
* :func:`augmentation_counts`: how often each spectrum should appear in training, from
  how distinct it is — cosine similarity to its nearest neighbours plus a masked L1
  distance that ignores zero-flux pixels — computed in blocks with Ray tasks so that it
  scales to grids of 10⁵ spectra; the most distinctive fraction gets up to 10 copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ray
from pydantic import BaseModel, ConfigDict, Field

from ..errors import SpectraError
from ..spectra.dataset import load_manifest
from ..spectra.manifest import ColumnSpec, Manifest, Provenance
from ..spectra.raydata import read_spectra, write_spectra
from ..version import code_version


class LibraryConfig(BaseModel):
    """``stellar-ray library``: which libraries go into one training library, and what is
    recorded per spectrum for training (``in_train``/``in_validation`` from the parameter
    split, ``copies`` from augmentation)."""

    model_config = ConfigDict(extra="forbid")

    sources: list[str] = Field(min_length=1, description="dataset URLs, highest priority "
                               "first")
    keys: list[str] = Field(default=["teff", "logg", "fe_h"], min_length=1,
                            description="labels whose exact combination identifies a "
                            "model across libraries, and the axes of the split")
    split: bool = Field(default=False, description="add in_train / in_validation columns "
                        "(the 2-train / 2-validation split in parameter space)")
    augment: int | None = Field(default=None, ge=2, description="add a copies column: up "
                                "to this many copies of the most distinctive spectra")
    repeat_fraction: float = Field(default=0.2, gt=0, lt=1, description="the share of "
                                   "spectra augmentation repeats")
    pixels: int = Field(default=2048, gt=0, description="pixels the spectra are binned to "
                        "for the similarity measure")

    def extra_columns(self) -> list[ColumnSpec]:
        out = []
        if self.split:
            out += [ColumnSpec(name="in_train", dtype="bool"),
                    ColumnSpec(name="in_validation", dtype="bool")]
        if self.augment is not None:
            out.append(ColumnSpec(name="copies", dtype="int32"))
        return out


def _check_sources(cfg: LibraryConfig, manifests: list[Manifest]) -> None:
    first = manifests[0]
    for url, m in zip(cfg.sources, manifests):
        if m.grid != first.grid or m.flux_unit != first.flux_unit:
            raise SpectraError("wavelength grid or flux unit differs from the first library "
                               f"({cfg.sources[0]}); resample it first (stellar-ray ingest "
                               "--grid)", file=url)
        missing = [k for k in cfg.keys if k not in m.label_names]
        if missing:
            raise SpectraError("label missing from this library", file=url, field=missing[0])
        clash = [c.name for c in cfg.extra_columns() if c.name in m.arrow_schema().names]
        if clash:
            raise SpectraError("the library already has this column", file=url,
                               field=clash[0])


@dataclass
class _Kept:
    """The spectra of one source that enter the library, with their key labels and, for
    augmentation, their binned flux."""

    ids: list[str]
    keys: np.ndarray  # (n, P)
    binned: np.ndarray | None  # (n, ≤ pixels)


def _kept(cfg: LibraryConfig, url: str, seen: set[tuple], storage_options: dict | None
          ) -> _Kept:
    """One pass over a source: the spectra whose key combination no earlier (higher
    priority) source holds; ``seen`` grows by theirs."""
    columns = ["spectrum_id", *cfg.keys] + (["flux"] if cfg.augment is not None else [])
    ids, keys, binned_parts = [], [], []
    ds = read_spectra(url, columns=columns, storage_options=storage_options)
    for batch in ds.iter_batches(batch_size=1024, batch_format="numpy"):
        values = np.stack([np.asarray(batch[k], dtype=np.float64) for k in cfg.keys], 1)
        take = []
        for i, key in enumerate(map(tuple, values)):
            if key not in seen:
                seen.add(key)
                take.append(i)
        ids += [str(batch["spectrum_id"][i]) for i in take]
        keys.append(values[take])
        if cfg.augment is not None:
            binned_parts.append(binned(np.asarray(batch["flux"], np.float32)[take],
                                       cfg.pixels))
    return _Kept(ids, np.concatenate(keys) if keys else np.empty((0, len(cfg.keys))),
                 np.concatenate(binned_parts) if binned_parts else None)


@dataclass(frozen=True)
class _AddColumns:
    """A Ray Data batch transform keeping the listed spectra and adding their columns."""

    values: dict[str, dict[str, np.ndarray]]  # column -> {id: value}; "" holds the ids

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        position = self.values[""]
        rows = np.array([str(i) in position for i in batch["spectrum_id"]], dtype=bool)
        out = {k: v[rows] for k, v in batch.items()}
        where = np.array([position[str(i)] for i in out["spectrum_id"]], dtype=np.int64)
        for name, column in self.values.items():
            if name:
                out[name] = column[where]
        return out


def build_library(cfg: LibraryConfig, to: str, *, storage_options: dict | None = None,
                  overwrite: bool = False) -> Manifest:
    """Write the union of ``cfg.sources`` to ``to``: a spectrum whose key labels exactly
    equal those of one from an earlier source is left out; with ``split`` and ``augment``
    each spectrum carries its split and its number of training copies (Ray must run)."""
    manifests = [load_manifest(u, storage_options) for u in cfg.sources]
    _check_sources(cfg, manifests)
    seen: set[tuple] = set()
    kept = [_kept(cfg, url, seen, storage_options) for url in cfg.sources]
    ids = [i for k in kept for i in k.ids]
    columns: dict[str, np.ndarray] = {}
    if cfg.split:
        split = parameter_split(np.concatenate([k.keys for k in kept]))
        columns["in_train"], columns["in_validation"] = split.train, split.validation
    if cfg.augment is not None:
        copies, _ = augmentation_counts(np.concatenate([k.binned for k in kept]),
                                        max_copies=cfg.augment,
                                        repeat_fraction=cfg.repeat_fraction,
                                        pixels=cfg.pixels)
        columns["copies"] = copies.astype(np.int32)
    label_specs = {lab.name: lab for m in manifests for lab in m.labels}
    first = manifests[0]
    manifest = first.model_copy(update={
        "labels": list(label_specs.values()), "shards": [],
        "model_flux": all(m.model_flux for m in manifests),
        "extra_metadata": [c for c in first.extra_metadata  # those every source has
                           if all(c in m.extra_metadata for m in manifests)]
        + cfg.extra_columns(),
        "provenance": Provenance(producer="stellar-ray library",
                                 config=cfg.model_dump(mode="json"),
                                 code_version=code_version()),
    })
    schema = manifest.arrow_schema().names
    parts = []
    for url, m, k in zip(cfg.sources, manifests, kept):
        mine = set(k.ids)
        position = {i: n for n, i in enumerate(ids) if i in mine}
        wanted = [c for c in schema if c in m.arrow_schema().names]
        ds = read_spectra(url, columns=wanted, storage_options=storage_options)
        parts.append(ds.map_batches(_AddColumns({"": position, **columns})))
    union = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    return write_spectra(union, to, manifest, storage_options=storage_options,
                         overwrite=overwrite)


@dataclass(frozen=True)
class Split:
    """Boolean masks (N,) of the three splits; train and validation may share boundary
    spectra, test is everything else."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def parameter_split(labels: np.ndarray, boundary: int = 2, block: int = 2) -> Split:
    """The SM-Net 2-train / 2-validation split of ``labels`` (N, P) in parameter space."""
    labels = np.asarray(labels)
    train = np.ones(labels.shape[0], bool)
    val = np.ones(labels.shape[0], bool)
    for axis in range(labels.shape[1]):
        values = np.unique(labels[:, axis])
        position = np.searchsorted(values, labels[:, axis])
        edge = (position < boundary) | (position >= values.size - boundary)
        in_train = ((position - boundary) // block) % 2 == 0
        train &= edge | in_train
        val &= edge | ~in_train
    return Split(train=train, validation=val, test=~(train | val))


def binned(flux: np.ndarray, pixels: int) -> np.ndarray:
    """Mean over groups of pixels, each spectrum divided by its median (scale-free)."""
    n = flux.shape[1] // pixels * pixels if flux.shape[1] >= pixels else flux.shape[1]
    groups = max(1, flux.shape[1] // pixels)
    binned = flux[:, :n].reshape(flux.shape[0], -1, groups).mean(axis=2)
    med = np.median(np.where(binned > 0, binned, np.nan), axis=1)
    return (binned / np.where(np.isfinite(med) & (med > 0), med, 1.0)[:, None]).astype(
        np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _block_dissimilarity(rows: np.ndarray, all_flux: np.ndarray, unit: np.ndarray,
                         neighbours: int) -> np.ndarray:
    """For spectra ``rows`` (indices), the smallest (1 − cosine) + masked L1 over their
    ``neighbours`` most cosine-similar other spectra (``unit``: rows of ``all_flux`` scaled
    to unit length)."""
    cos = unit[rows] @ unit.T
    cos[np.arange(len(rows)), rows] = -np.inf  # not oneself
    k = min(neighbours, all_flux.shape[0] - 1)
    best = np.argpartition(-cos, k - 1, axis=1)[:, :k]
    out = np.empty(len(rows))
    for i, (row, cand) in enumerate(zip(rows, best)):
        a, b = all_flux[row][None, :], all_flux[cand]
        valid = (a != 0) & (b != 0)
        l1 = np.where(valid, np.abs(a - b), 0).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
        out[i] = np.min((1.0 - cos[i, cand]) + l1)
    return out


def augmentation_counts(flux: np.ndarray, max_copies: int = 10, repeat_fraction: float = 0.2,
                        pixels: int = 2048, neighbours: int = 8, block_rows: int = 2048
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(copies (N,) int, dissimilarity (N,)) for spectra ``flux`` (N, L).

    Copies are 1 for the most common ``1 − repeat_fraction`` of spectra and rise linearly
    with the dissimilarity rank to ``max_copies`` for the most distinctive one. The pairwise
    work runs as Ray tasks over blocks of ``block_rows`` spectra (Ray must be running)."""
    small = binned(np.asarray(flux, dtype=np.float32), pixels)
    shared, unit = ray.put(small), ray.put(_unit(small))
    task = ray.remote(_block_dissimilarity)
    blocks = [np.arange(i, min(i + block_rows, len(small)))
              for i in range(0, len(small), block_rows)]
    d = np.concatenate(ray.get([task.remote(b, shared, unit, neighbours) for b in blocks]))
    rank = np.argsort(np.argsort(d)) / max(len(d) - 1, 1)  # 0 = most common, 1 = most unusual
    threshold = 1.0 - repeat_fraction
    scaled = (rank - threshold) / max(repeat_fraction, 1e-12)
    copies = np.where(rank > threshold,
                      2 + np.floor(scaled * (max_copies - 2) + 0.5), 1).astype(int)
    return np.clip(copies, 1, max_copies), d
