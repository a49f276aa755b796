"""``stellar-ray infer``: a model artifact over a spectrum dataset into a catalog.

A Ray Data streaming pipeline: read shards (tagged with their shard) → the model in an
autoscaling actor pool (:class:`~.predict.Predictor`, :class:`~.fit.EmulatorFitter` or
:class:`~.gp.GPMinimizer`) → the driver, which gathers each input shard's rows and commits
them as one catalog part (atomically, with a commit record) the moment the shard is
complete. Rows are keyed by
spectrum_id, so a batch that Ray runs twice after an actor died cannot add a row twice. A
rerun of the same command skips committed shards; a shard that cannot be read is reported
and left uncommitted (the next run tries it again); the rest of the catalog is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from ray.data import ActorPoolStrategy
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..artifact import Artifact, load_artifact
from ..config_files import load_config
from ..errors import ConfigError, SpectraError
from ..models.tasks import Task
from ..quantities import default_unit
from ..runtime import init_ray
from ..spectra.catalog import CatalogWriter
from ..spectra.dataset import load_manifest, read_shard
from ..spectra.manifest import Manifest, Provenance
from ..spectra.raydata import SOURCE_COLUMN, read_spectra
from ..spectra.schema import ID_COLUMN, POSITION_COLUMNS
from ..spectra.storage import join, read_bytes, resolve, write_bytes_atomic
from ..version import code_version
from .actor import model_frame, rv_templates
from .config import CatalogJobConfig, InferConfig
from .fit import EmulatorFitter
from .gp import GPMinimizer
from .predict import Predictor
from .quality import CatalogFlag

log = logging.getLogger(__name__)
JOB_FILE = "_job.json"


@dataclass
class InferSummary:
    """What a run did (also what ``stellar-ray infer`` prints)."""

    catalog: str
    spectra: int  # rows in the catalog
    new_spectra: int  # rows committed by this run
    skipped_shards: int  # committed by an earlier run
    failed_shards: dict[str, str] = field(default_factory=dict)  # shard -> reason
    flags: dict[str, int] = field(default_factory=dict)  # flag name -> spectra (this run)
    seconds: float = 0.0

    @property
    def spectra_per_s(self) -> float:
        return self.new_spectra / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        lines = [f"catalog: {self.catalog}",
                 f"spectra: {self.spectra} in the catalog, {self.new_spectra} written now "
                 f"({self.spectra_per_s:.1f} spectra/s over {self.seconds:.1f} s); "
                 f"{self.skipped_shards} shard(s) were already done"]
        if self.flags:
            lines.append("flags: " + ", ".join(f"{k} {v}" for k, v in self.flags.items()))
        for shard, reason in self.failed_shards.items():
            lines.append(f"FAILED shard {shard}: {reason}")
        return "\n".join(lines)


def _claim(cfg: CatalogJobConfig, claim: dict[str, str]) -> None:
    """Record which model (or templates), data and settings a catalog belongs to; refuse to
    mix."""
    # what changes the rows; not how fast they come (actors, GPU precision) or where
    settings = cfg.model_dump(mode="json", exclude={"actors", "storage_options", "to",
                                                    "gpu_precision"})
    job = {**claim, "data": cfg.data,
           "settings_sha256": hashlib.sha256(json.dumps(settings, sort_keys=True)
                                             .encode()).hexdigest()}
    fs, base = resolve(cfg.to, cfg.storage_options)
    path = join(base, JOB_FILE)
    if fs.exists(path):
        before = json.loads(read_bytes(fs, path))
        changed = [k for k in job if before.get(k) != job[k]]
        if changed:
            what = {"artifact_id": "model", "templates": "templates", "data": "dataset",
                    "mode": "mode", "settings_sha256": "settings (samples, quantiles, "
                    "noise_redraws, fit, rv, quality, carry_columns or seed)"}[changed[0]]
            raise SpectraError(f"this catalog was started with a different {what}; write to "
                               "another location or delete it", file=cfg.to)
        return
    write_bytes_atomic(fs, path, json.dumps(job, indent=1).encode())


def _columns(cfg: CatalogJobConfig, manifest: Manifest) -> list[str]:
    names = manifest.arrow_schema().names
    missing = [c for c in cfg.carry_columns if c not in names]
    if missing:
        raise SpectraError(f"carry_columns: no such column (the dataset has {names})",
                           file=cfg.data, field=missing[0])
    extra = [c for c in ("snr", *POSITION_COLUMNS) if c in names]
    return ["flux", "sigma", "mask", *extra, *[c for c in cfg.carry_columns if c not in extra]]


class _ShardBuffer:
    """Rows of one input shard as they arrive, each spectrum_id kept once."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.tables: list[pa.Table] = []
        self.ids: set[str] = set()

    def add(self, table: pa.Table) -> None:
        ids = table.column(ID_COLUMN).to_pylist()
        fresh = [i not in self.ids for i in ids]
        if not all(fresh):
            table = table.filter(pa.array(fresh))
        if table.num_rows:
            self.ids.update(table.column(ID_COLUMN).to_pylist())
            self.tables.append(table)

    @property
    def complete(self) -> bool:
        return len(self.ids) >= self.expected

    def table(self) -> pa.Table:
        return pa.concat_tables(self.tables).sort_by(ID_COLUMN)


def _why_unreadable(cfg: CatalogJobConfig, manifest: Manifest, shard: str) -> str:
    record = next(r for r in manifest.shards if r.path == shard)
    try:
        read_shard(cfg.data, record, manifest, verify=True,
                   storage_options=cfg.storage_options)
    except Exception as err:  # noqa: BLE001 - the reason is what we report
        return str(err)
    return "rows went missing in the pipeline (see the actors' logs); rerun to retry"


#: The actor class of each inference mode.
ACTORS = {"predict": Predictor, "fit": EmulatorFitter, "gp": GPMinimizer}


def inference_mode(cfg: InferConfig, task: Task) -> str:
    """The inference mode for a model of ``task``: the configured one, or the task's
    default for ``auto``."""
    mode = task.modes[0] if cfg.mode == "auto" else cfg.mode
    if mode not in task.modes:
        raise ConfigError(f"this {task.family} cannot run in mode '{mode}': use mode "
                          f"'{task.modes[0]}'", where=cfg.model, field="mode")
    return mode


def _check_frame(cfg: InferConfig, artifact: Artifact, manifest: Manifest) -> None:
    """Fail before any work if the spectra cannot reach the model's frame or the RV stage
    has no templates (the actors build the same things)."""
    model_frame(cfg, artifact, manifest)
    if cfg.rv.measure:
        rv_templates(cfg, artifact)


def _estimates(cfg: CatalogJobConfig, manifest: Manifest, actor: type, shards: list[str]):
    """The Ray Data pipeline: read the shards (tagged with their shard) → the actor pool."""
    pool = cfg.actors
    ds = read_spectra(cfg.data, columns=_columns(cfg, manifest), verify=cfg.verify,
                      storage_options=cfg.storage_options, shards=shards, tag_source=True,
                      skip_bad=True, num_cpus=cfg.read_cpus)
    return ds.map_batches(
        actor, fn_constructor_args=(cfg.model_dump_json(),),
        batch_size=pool.batch_size, batch_format="numpy",
        compute=ActorPoolStrategy(min_size=pool.min_actors, max_size=pool.max_actors),
        num_cpus=pool.cpus_per_actor, num_gpus=pool.gpus_per_actor or None,
        runtime_env={"env_vars": cfg.actor_env} if cfg.actor_env else None)


def _gather(results, todo: dict[str, int], writer: CatalogWriter, summary: InferSummary,
            progress: bool) -> dict[str, _ShardBuffer]:
    """Gather each input shard's rows as they arrive and commit the shard the moment it is
    complete; returns the buffers of shards that never completed."""
    buffers = {shard: _ShardBuffer(rows) for shard, rows in todo.items()}
    columns = Progress(TextColumn("[bold]inference"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), disable=not progress, transient=True)
    with columns as bar:
        task = bar.add_task("spectra", total=sum(todo.values()))
        for block in results.iter_batches(batch_size=None, batch_format="pyarrow"):
            for shard in pc.unique(block.column(SOURCE_COLUMN)).to_pylist():
                rows = block.filter(pc.equal(block.column(SOURCE_COLUMN), shard))
                buffer = buffers[shard]
                before = len(buffer.ids)
                buffer.add(rows.drop_columns([SOURCE_COLUMN]))
                bar.advance(task, len(buffer.ids) - before)
                if buffer.complete:
                    _commit(writer, shard, buffer.table(), summary)
                    del buffers[shard]
    return buffers


def _commit(writer: CatalogWriter, shard: str, table: pa.Table, summary: InferSummary) -> None:
    writer.commit(shard, table)
    summary.new_spectra += table.num_rows
    flags = table.column("flags").to_numpy()
    for f in CatalogFlag:
        if count := int(np.count_nonzero(flags & f)):
            summary.flags[f.name] = summary.flags.get(f.name, 0) + count


def infer(cfg: InferConfig | dict | str | Path, address: str | None = None,
          progress: bool = True) -> InferSummary:
    """Run inference as configured (an InferConfig, its dict or a YAML path); returns the
    summary. Resumes a catalog that exists."""
    cfg = load_config(InferConfig, cfg)
    started = time.perf_counter()
    manifest = load_manifest(cfg.data, cfg.storage_options)
    artifact = load_artifact(cfg.model, cfg.storage_options)  # checks it before any work
    _check_frame(cfg, artifact, manifest)
    mode = inference_mode(cfg, artifact.task)
    job = CatalogJob(actor=ACTORS[mode], claim={"artifact_id": artifact.artifact_id,
                                                 "mode": mode},
                     producer=f"stellar-ray infer ({mode})",
                     units=catalog_units(artifact, manifest, cfg.carry_columns),
                     provenance={"artifact_id": artifact.artifact_id})
    return run_catalog_job(cfg, manifest, job, address, progress, started)


@dataclass
class CatalogJob:
    """What a catalog job runs in its actor pool and records: the actor class (built from
    the config's JSON), what the catalog is claimed for, its producer, column units and
    provenance entries beyond the config."""

    actor: type
    claim: dict[str, str]
    producer: str
    units: dict[str, str]
    provenance: dict[str, str] = field(default_factory=dict)


def run_catalog_job(cfg: CatalogJobConfig, manifest: Manifest, job: CatalogJob,
                    address: str | None, progress: bool, started: float) -> InferSummary:
    """Claim the catalog, run the actor pool over the shards not yet committed, commit
    each shard as it completes, and finalise the catalog."""
    _claim(cfg, job.claim)
    writer = CatalogWriter(cfg.to, cfg.storage_options)
    done = writer.committed_keys()
    todo = {r.path: r.rows for r in manifest.shards if r.path not in done}
    summary = InferSummary(catalog=cfg.to, spectra=0, new_spectra=0,
                           skipped_shards=len(manifest.shards) - len(todo))
    if todo:
        init_ray(address)
        results = _estimates(cfg, manifest, job.actor, list(todo))
        for shard in _gather(results, todo, writer, summary, progress):
            summary.failed_shards[shard] = _why_unreadable(cfg, manifest, shard)
    provenance = Provenance(producer=job.producer,
                            config=cfg.model_dump(mode="json", exclude={"storage_options"})
                            | job.provenance, code_version=code_version())
    catalog = writer.finalize(provenance, units=job.units)
    summary.spectra = catalog.num_rows
    summary.seconds = time.perf_counter() - started
    return summary


def catalog_units(artifact: Artifact | None, manifest: Manifest, carried: list[str]
                  ) -> dict[str, str]:
    """Unit of every catalog column that has one: the labels' (from the artifact, if any)
    for the estimates, their errors and quantiles; the dataset's for carried columns; km/s
    for the velocities."""
    units = {"rv": "km/s", "rv_err": "km/s", "broadening": "km/s", "ra": "deg", "dec": "deg"}
    for name, unit in (artifact.units.items() if artifact else ()):
        if unit:
            units[name] = units[f"{name}_err"] = unit
    known = {lab.name: lab.unit for lab in manifest.labels} | {
        c.name: c.unit for c in manifest.extra_metadata}
    for name in carried:
        if unit := known.get(name) or default_unit(name):
            units[f"input_{name}"] = unit
    return units
