"""Building training libraries the SM-Net way (paper 000 §2–3).

* :func:`combine_libraries`: the union of several spectral libraries on one grid, where a
  label combination present in more than one library is kept only from the library with
  the highest priority (first in the list).
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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import ray

from ..errors import SpectraError
from ..spectra.dataset import load_manifest
from ..spectra.manifest import Manifest, Provenance
from ..spectra.raydata import read_spectra, write_spectra
from ..version import code_version


def _label_table(url: str, names: Sequence[str], storage_options: dict | None) -> pa.Table:
    ds = read_spectra(url, columns=list(names), storage_options=storage_options)
    return pa.concat_tables(list(ds.iter_batches(batch_size=None, batch_format="pyarrow")))


def combine_libraries(urls: Sequence[str], to: str, keys: Sequence[str] = ("teff", "logg",
                      "fe_h"), storage_options: dict | None = None,
                      overwrite: bool = False) -> Manifest:
    """Write the union of the libraries at ``urls`` (priority order) to ``to``, dropping a
    spectrum whose ``keys`` labels exactly equal those of one kept from an earlier library.
    All libraries must share the wavelength grid and flux unit."""
    manifests = [load_manifest(u, storage_options) for u in urls]
    first = manifests[0]
    for url, m in zip(urls[1:], manifests[1:]):
        if m.grid != first.grid or m.flux_unit != first.flux_unit:
            raise SpectraError("wavelength grid or flux unit differs from the first library "
                               f"({urls[0]}); resample it first (stellar-ray ingest --grid)",
                               file=url)
        missing = [k for k in keys if k not in m.label_names]
        if missing:
            raise SpectraError("label missing from this library", file=url, field=missing[0])
    seen: set[tuple] = set()
    keep_ids: list[set[str]] = []
    for url in urls:
        table = _label_table(url, keys, storage_options)
        values = zip(*(table.column(k).to_pylist() for k in keys))
        ids = table.column("spectrum_id").to_pylist()
        kept = set()
        for sid, key in zip(ids, values):
            if key not in seen:
                seen.add(key)
                kept.add(sid)
        keep_ids.append(kept)
    label_specs = {lab.name: lab for m in manifests for lab in m.labels}
    manifest = first.model_copy(update={
        "labels": list(label_specs.values()), "shards": [], "model_flux": False,
        "provenance": Provenance(producer="stellar-ray combine-libraries",
                                 config={"libraries": list(urls), "keys": list(keys)},
                                 code_version=code_version()),
    })
    columns = [f.name for f in manifest.arrow_schema()]
    parts = []
    for url, m, kept in zip(urls, manifests, keep_ids):
        wanted = [c for c in columns if c in m.arrow_schema().names]
        ds = read_spectra(url, columns=wanted, storage_options=storage_options)
        parts.append(ds.filter(lambda row, kept=kept: row["spectrum_id"] in kept))
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


def _downsample(flux: np.ndarray, pixels: int) -> np.ndarray:
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
    small = _downsample(np.asarray(flux, dtype=np.float32), pixels)
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
