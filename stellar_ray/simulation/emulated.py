"""``stellar-ray emulate``: a trained emulator as a generator of noiseless spectra.

Labels come from a catalog (one row per spectrum, its id column naming the spectra) or are
drawn uniformly inside the emulator's training domain (:class:`EmulatorPrior`, seeded by
(seed, shard), so a resumed or re-sharded run draws the same labels). Labels outside the
training domain are refused (the error names the file, row and label) or, with
``outside="flag"``, written with the boolean column ``outside_domain``. Spectra are on the
emulator's grid, or on any grid for emulators that take wavelengths (TransformerPayne).
Piped through ``stellar-ray observe`` this turns a grid of a few thousand spectra into a
training set of any size with continuous labels.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..artifact import Artifact, load_artifact
from ..errors import ModelError, SpectraError
from ..spectra.batch import SpectrumBatch
from ..spectra.grid import WavelengthGrid
from ..spectra.ingest.label_catalog import LabelCatalogOptions, read_label_catalog
from ..spectra.manifest import ColumnSpec, LabelSpec, Manifest, Provenance, ShardRecord
from ..spectra.shard_job import run_shard_job, write_committed_shard
from ..version import code_version
from .observe import ObserveConfig, observe

#: Spectra per emulator call.
CHUNK = 256
OUTSIDE = "outside_domain"


class EmulatorPrior(BaseModel):
    """``n`` label vectors drawn uniformly inside the emulator's training domain; ``ranges``
    narrow a label's interval, ``fixed`` pins it (YAML-loadable)."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=1000, gt=0)
    seed: int = 0
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    fixed: dict[str, float] = Field(default_factory=dict)

    def bounds(self, domain: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        """Each label's interval: the domain, narrowed or pinned; unknown names refused."""
        out = dict(domain)
        for name, (lo, hi) in {**self.ranges, **{k: (v, v) for k, v in self.fixed.items()}
                               }.items():
            if name not in domain:
                raise ValueError(f"prior: '{name}' is not a label of the emulator "
                                 f"({list(domain)})")
            dlo, dhi = domain[name]
            if not (dlo <= lo <= hi <= dhi):
                raise ValueError(f"prior.{name}: [{lo}, {hi}] must lie inside the training "
                                 f"domain [{dlo:.6g}, {dhi:.6g}]")
            out[name] = (lo, hi)
        return out

    def sample(self, domain: dict[str, tuple[float, float]], shard: int, count: int
               ) -> np.ndarray:
        """(count, K) labels of shard ``shard`` in the domain's label order."""
        rng = np.random.default_rng([self.seed, shard])
        b = self.bounds(domain)
        return np.stack([rng.uniform(*b[name], count) for name in domain], axis=1)


@dataclass(frozen=True)
class EmulatePlan:
    """What to emulate: labels (given rows with their ids, or a prior), the grid, and what
    to do with labels outside the training domain."""

    artifact: str
    grid: WavelengthGrid | None
    rows_per_shard: int
    outside: Literal["refuse", "flag"]
    prior: EmulatorPrior | None = None
    ids: np.ndarray | None = None
    labels: np.ndarray | None = None

    @property
    def total(self) -> int:
        return self.prior.n if self.prior is not None else len(self.ids)

    @property
    def shards(self) -> list[str]:
        n = -(-self.total // self.rows_per_shard)
        return [f"part-{k:06d}.parquet" for k in range(n)]


@lru_cache(maxsize=2)
def _artifact(url: str, storage_json: str) -> Artifact:
    from ..runtime import pick_device

    return load_artifact(url, json.loads(storage_json), device=pick_device())


def _domain(art: Artifact) -> dict[str, tuple[float, float]]:
    return {lab.name: (lab.low, lab.high) for lab in art.metadata.labels}


def outside_domain(labels: np.ndarray, domain: dict[str, tuple[float, float]]) -> np.ndarray:
    """(N, K) boolean: which values lie outside their label's training interval."""
    lo = np.array([v[0] for v in domain.values()])
    hi = np.array([v[1] for v in domain.values()])
    span = np.maximum(hi - lo, 1e-12)
    return (labels < lo - 1e-9 * span) | (labels > hi + 1e-9 * span) | ~np.isfinite(labels)


def emulated_batch(plan: EmulatePlan, shard: int, storage_options: dict | None = None
                   ) -> SpectrumBatch:
    """Shard ``shard`` of the plan: its labels and the emulator's spectra for them."""
    art = _artifact(plan.artifact, json.dumps(storage_options or {}, sort_keys=True))
    domain = _domain(art)
    start = shard * plan.rows_per_shard
    count = min(plan.rows_per_shard, plan.total - start)
    if plan.prior is not None:
        labels = plan.prior.sample(domain, shard, count)
        ids = np.array([f"emu-{plan.prior.seed}-{start + i:09d}" for i in range(count)],
                       dtype=object)
    else:
        labels, ids = plan.labels[start:start + count], plan.ids[start:start + count]
    wave = None if plan.grid is None else plan.grid.wavelength()
    flux = np.concatenate([art.emulate(labels[i:i + CHUNK], wave)
                           for i in range(0, count, CHUNK)])
    metadata = {}
    if plan.outside == "flag":
        metadata[OUTSIDE] = outside_domain(labels, domain).any(axis=1)
    return SpectrumBatch(spectrum_id=ids, flux=flux, sigma=np.zeros_like(flux),
                         mask=np.zeros(flux.shape, np.uint8),
                         labels={name: labels[:, k] for k, name in enumerate(domain)},
                         metadata=metadata)


def _emulate_shard(name: str, plan: EmulatePlan, manifest: Manifest, to: str, digest: str,
                   storage_options: dict | None) -> ShardRecord:
    shard = int(name.removeprefix("part-").removesuffix(".parquet"))
    return write_committed_shard(to, name, emulated_batch(plan, shard, storage_options),
                                 manifest, digest, storage_options)


def read_label_rows(path: str, id_column: str, names: list[str],
                    domain: dict[str, tuple[float, float]], outside: str,
                    storage_options: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N,), labels (N, K)) from a catalog with one column per emulator label; a missing
    value, or (unless flagged) one outside the training domain, is an error naming its row."""
    catalog = read_label_catalog(LabelCatalogOptions(path=path, id_column=id_column),
                                 storage_options)
    missing = [n for n in names if n not in catalog.labels]
    if missing:
        raise SpectraError(f"no column for the emulator's label '{missing[0]}' (found "
                           f"{sorted(catalog.labels)})", file=path, field=missing[0])
    order = sorted(catalog.index, key=catalog.index.get)
    labels = np.stack([catalog.labels[n] for n in names], axis=1)
    unknown = ~np.isfinite(labels)
    refused = unknown | (outside_domain(labels, domain) if outside == "refuse" else False)
    if refused.any():
        row, k = (int(i[0]) for i in np.nonzero(refused))
        lo, hi = domain[names[k]]
        what = "has no value" if unknown[row, k] else (
            f"= {labels[row, k]} is outside the emulator's training domain [{lo:.6g}, "
            f"{hi:.6g}] (--outside flag writes it anyway, flagged)")
        raise SpectraError(f"{names[k]} {what}", file=path, row=row, field=names[k])
    return np.array(order, dtype=object), labels


def emulate(artifact: str, to: str, *, prior: EmulatorPrior | None = None,
            labels_path: str | None = None, labels_id: str | None = None,
            grid: WavelengthGrid | None = None, outside: Literal["refuse", "flag"] = "refuse",
            rows_per_shard: int = 4096, overwrite: bool = False,
            storage_options: dict | None = None, address: str | None = None,
            progress: bool = True) -> Manifest:
    """Write the emulator's spectra at given (``labels_path`` with its ``labels_id``
    column) or prior-drawn labels into a noiseless dataset at ``to`` (resumable)."""
    if (prior is None) == (labels_path is None):
        raise ValueError("give exactly one of --labels FILE and --prior CONFIG")
    if labels_path is not None and not labels_id:
        raise ValueError("--labels needs --labels-id COLUMN (the catalog's id column)")
    art = load_artifact(artifact, storage_options)
    if "fit" not in art.task.modes:
        raise ModelError(f"a {art.task.family} does not emulate spectra", where=artifact)
    queries = getattr(art.task, "wavelength_queries", False)
    if grid is not None and not queries and grid != art.grid:
        raise ModelError(f"a {art.metadata.model} emulator gives its training grid only; "
                         "leave out --grid (TransformerPayne takes any grid)", where=artifact)
    domain = _domain(art)
    names = list(domain)
    ids = values = None
    if prior is not None:
        prior.bounds(domain)  # refuse a bad prior before any work
    else:
        ids, values = read_label_rows(labels_path, labels_id, names, domain, outside,
                                      storage_options)
    plan = EmulatePlan(artifact=artifact, grid=grid, rows_per_shard=rows_per_shard,
                       outside=outside, prior=prior, ids=ids, labels=values)
    units = {lab.name: lab.unit for lab in art.metadata.labels}
    labels_digest = None if values is None else hashlib.sha256(
        values.tobytes() + "\0".join(ids).encode()).hexdigest()
    config = {"artifact": artifact, "artifact_id": art.artifact_id,
              "prior": prior.model_dump(mode="json") if prior else None,
              "labels": labels_path, "labels_sha256": labels_digest,
              "grid": grid.model_dump(mode="json") if grid else None, "outside": outside}
    manifest = Manifest(
        grid=grid or art.grid, flux_unit=art.metadata.flux_unit, uncertainties="none",
        labels=[LabelSpec(name=n, unit=units[n]) for n in names],
        resolution=art.metadata.resolution,
        extra_metadata=[ColumnSpec(name=OUTSIDE, dtype="bool")] if outside == "flag" else [],
        rows_per_shard=rows_per_shard,
        provenance=Provenance(producer="stellar-ray emulate", config=config,
                              code_version=code_version()))
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    return run_shard_job(to, manifest, plan.shards, digest, _emulate_shard,
                         (plan, manifest, to, digest, storage_options), overwrite=overwrite,
                         storage_options=storage_options, address=address, progress=progress,
                         what=f"emulating {plan.total} spectra")


def observe_emulated(artifact: str, config: ObserveConfig, to: str, *,
                     prior: EmulatorPrior | None = None, labels_path: str | None = None,
                     labels_id: str | None = None, overwrite: bool = False,
                     storage_options: dict | None = None, address: str | None = None,
                     progress: bool = True) -> Manifest:
    """An emulator as the source of ``stellar-ray observe``: its rest-frame spectra at given
    or prior-drawn labels, on its training grid at its training resolution, observed
    through ``config`` into ``to``. The noiseless emulated spectra are kept beside it at
    ``<to>-emulated``; both steps resume."""
    emulated = f"{to.rstrip('/')}-emulated"
    emulate(artifact, emulated, prior=prior, labels_path=labels_path, labels_id=labels_id,
            overwrite=overwrite, storage_options=storage_options, address=address,
            progress=progress)
    return observe(config, emulated, to, overwrite=overwrite,
                   storage_options=storage_options, address=address, progress=progress)
