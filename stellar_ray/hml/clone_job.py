"""``stellar-ray hml clone``: every spectrum of a grid dataset cloned (:mod:`.clone`), one
Ray task per shard, resumable.

Layout of a clone set at URL: ``lines/<shard>.parquet`` (one row per line per grid
spectrum: ``spectrum_id``, ``pixel``, ``mu0``, ``mu``, ``ln_a``, ``sigma``, ``gamma``,
``prominence``), ``spectra/<shard>.parquet`` (one row per grid spectrum: its id and
labels, ``n_lines``, the reconstruction's ``rms`` in normalised flux and the
``continuum`` coefficients), a commit record ``_progress/<shard>.json`` per finished shard,
and ``clones.json`` once every shard is done. Each file is written atomically; a rerun of
the same job skips the committed shards, another job at the same place is refused.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from pydantic import BaseModel, ConfigDict
from rich.progress import Progress

from ..errors import SpectraError
from ..runtime import init_ray, pick_device
from ..spectra.batch import SpectrumBatch
from ..spectra.dataset import load_manifest, put_table, read_shard
from ..spectra.grid import WavelengthGrid
from ..spectra.manifest import Manifest
from ..spectra.resolution import Resolution
from ..spectra.shard_job import PROGRESS_DIR, progress_records
from ..spectra.storage import join, read_bytes, resolve, write_bytes_atomic
from ..threads import use_allotted_threads
from ..version import code_version
from .clone import Clone, CloneConfig, Cloner

CLONES_FILE = "clones.json"
TEFF = "teff"


class CloneSet(BaseModel):
    """What ``clones.json`` records about a finished clone set."""

    model_config = ConfigDict(extra="forbid")

    kind: str = "hml-clones"
    source: str
    config: CloneConfig
    blackbody: bool
    grid: WavelengthGrid
    flux_unit: str
    labels: list[str]
    units: dict[str, str | None]
    resolution: list[Resolution]
    shards: list[str]
    digest: str
    code_version: str


def _digest(source_manifest: Manifest, config: CloneConfig) -> str:
    """Hash of what decides the clones: the grid's shards and the configuration."""
    text = json.dumps([[s.sha256 for s in source_manifest.shards], config.model_dump()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _uses_blackbody(config: CloneConfig, manifest: Manifest, where: str) -> bool:
    blackbody = config.blackbody if config.blackbody is not None else manifest.flux_unit != ""
    if blackbody and TEFF not in manifest.label_names:
        raise SpectraError("blackbody division needs a 'teff' label; set blackbody: false",
                           file=where)
    return blackbody


def clone_shard(grid_url: str, shard: int, to: str, config: CloneConfig, blackbody: bool,
                digest: str, storage_options: dict | None, cpus: float) -> int:
    """Clone one shard of the grid and commit it (with the torch threads best for ``cpus``
    CPUs); returns its number of lines."""
    use_allotted_threads(cpus)
    manifest = load_manifest(grid_url, storage_options)
    record = manifest.shards[shard]
    batch = SpectrumBatch.from_arrow(read_shard(grid_url, record, manifest,
                                                storage_options=storage_options), manifest)
    flux = batch.model_flux if batch.model_flux is not None else batch.flux
    labels = {name: np.asarray(batch.labels[name], dtype=np.float64)
              for name in manifest.label_names} if batch.labels else {}
    teff = labels.get(TEFF, np.full(len(batch), np.nan))
    if blackbody and not np.all(np.isfinite(teff) & (teff > 0)):
        row = int(np.flatnonzero(~(np.isfinite(teff) & (teff > 0)))[0])
        raise SpectraError("blackbody division needs a positive Teff", file=f"{grid_url}/"
                           f"{record.path}", row=row, field=TEFF)
    cloner = Cloner(manifest.grid.wavelength(), manifest.grid.arm_npix(), config, blackbody,
                    pick_device())
    clones: list[Clone] = []
    for lo in range(0, len(batch), config.batch_size):
        part = slice(lo, lo + config.batch_size)
        clones += cloner.clone(flux[part], batch.mask[part] == 0, teff[part])
    name = record.path.rsplit("/", 1)[-1]
    put_table(to, f"lines/{name}", _line_table(batch.spectrum_id, clones), storage_options)
    put_table(to, f"spectra/{name}", _spectrum_table(batch.spectrum_id, labels, clones),
              storage_options)
    fs, base = resolve(to, storage_options)
    n_lines = int(sum(len(c.mu) for c in clones))
    write_bytes_atomic(fs, join(base, f"{PROGRESS_DIR}/{name}.json"),
                       json.dumps({"digest": digest, "lines": n_lines}).encode())
    return n_lines


def _line_table(ids: np.ndarray, clones: list[Clone]) -> pa.Table:
    counts = [len(c.mu) for c in clones]
    columns: dict[str, Any] = {"spectrum_id": np.repeat(np.asarray(ids, dtype=object),
                                                        counts)}
    for name, dtype in (("pixel", np.int32), ("mu0", np.float64), ("mu", np.float64),
                        ("ln_a", np.float32), ("sigma", np.float32), ("gamma", np.float32),
                        ("prominence", np.float32)):
        columns[name] = np.concatenate([getattr(c, name) for c in clones]).astype(dtype)
    return pa.table(columns)


def _spectrum_table(ids: np.ndarray, labels: dict[str, np.ndarray],
                    clones: list[Clone]) -> pa.Table:
    return pa.table({
        "spectrum_id": pa.array(np.asarray(ids, dtype=object), pa.string()),
        **{name: pa.array(values) for name, values in labels.items()},
        "n_lines": pa.array([len(c.mu) for c in clones], pa.int32()),
        "rms": pa.array([c.rms for c in clones], pa.float64()),
        "continuum": pa.array([c.continuum.tolist() for c in clones],
                              pa.list_(pa.float64())),
    })


def clone_grid(grid_url: str, to: str, config: CloneConfig | None = None, *,
               overwrite: bool = False, storage_options: dict | None = None,
               address: str | None = None, cpus_per_task: float = 1.0,
               gpus_per_task: float = 0.0, progress: bool = True) -> CloneSet:
    """Clone every spectrum of the grid dataset at ``grid_url`` into a clone set at
    ``to``, one Ray task per shard, resuming an unfinished run of the same job."""
    config = config or CloneConfig()
    manifest = load_manifest(grid_url, storage_options)
    blackbody = _uses_blackbody(config, manifest, grid_url)
    digest = _digest(manifest, config)
    fs, base = resolve(to, storage_options)
    if overwrite and fs.exists(base):
        fs.rm(base, recursive=True)
    if fs.exists(join(base, CLONES_FILE)):
        finished = load_clone_set(to, storage_options)
        if finished.digest == digest:
            return finished
        raise SpectraError("clones of another grid or configuration are here; use "
                           "--overwrite or another location", file=to)
    names = [r.path.rsplit("/", 1)[-1] for r in manifest.shards]
    done = set(progress_records(to, digest, storage_options))
    todo = [i for i, n in enumerate(names) if n not in done]
    if todo:
        init_ray(address)
        remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task)(clone_shard)
        pending = [remote.remote(grid_url, i, to, config, blackbody, digest, storage_options,
                                 cpus_per_task) for i in todo]
        with Progress(disable=not progress, transient=True) as bar:
            job = bar.add_task("cloning shards", total=len(names), completed=len(done))
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                ray.get(ready[0])
                bar.advance(job)
    labels = manifest.label_names
    clone_set = CloneSet(source=grid_url, config=config, blackbody=blackbody,
                         grid=manifest.grid, flux_unit=manifest.flux_unit, labels=labels,
                         units={s.name: s.unit for s in manifest.labels},
                         resolution=manifest.resolution, shards=names, digest=digest,
                         code_version=code_version())
    write_bytes_atomic(fs, join(base, CLONES_FILE), clone_set.model_dump_json(indent=1)
                       .encode())
    return clone_set


def load_clone_set(url: str, storage_options: dict | None = None) -> CloneSet:
    """The description of the finished clone set at ``url``."""
    fs, base = resolve(url, storage_options)
    try:
        return CloneSet.model_validate_json(read_bytes(fs, join(base, CLONES_FILE)))
    except FileNotFoundError as err:
        raise SpectraError("no finished clone set here (missing clones.json; run or resume "
                           "stellar-ray hml clone)", file=url) from err


def read_clones(url: str, storage_options: dict | None = None
                ) -> tuple[CloneSet, pa.Table, pa.Table]:
    """A finished clone set: its description, its spectra table and its line table."""
    clone_set = load_clone_set(url, storage_options)
    fs, base = resolve(url, storage_options)

    def read(folder: str) -> pa.Table:
        return pa.concat_tables([
            pq.read_table(pa.BufferReader(read_bytes(fs, join(base, f"{folder}/{n}"))))
            for n in clone_set.shards])

    return clone_set, read("spectra"), read("lines")
