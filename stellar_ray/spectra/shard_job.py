"""Datasets made shard by shard in Ray tasks, resumably (``simulate``, ``observe``,
``emulate``).

Each task writes its shard and then a commit record ``_progress/<shard>.json`` holding the
job's digest and the shard's record; a rerun of the same job (same digest) skips the
recorded shards, a different job at the same place is refused, and the manifest is
committed once every shard is done (the records stay beside it, small, so that a rerun
after a lost manifest redoes nothing).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import ray
from rich.progress import Progress

from ..errors import SpectraError
from ..runtime import init_ray
from .batch import SpectrumBatch
from .dataset import commit_manifest, dataset_exists, delete_dataset, load_manifest, write_shard
from .manifest import Manifest, ShardRecord
from .storage import join, read_bytes, resolve, retrying, write_bytes_atomic

PROGRESS_DIR = "_progress"


def _record_path(base: str, shard: str) -> str:
    return join(base, f"{PROGRESS_DIR}/{shard.removesuffix('.parquet')}.json")


def write_committed_shard(url: str, name: str, batch: SpectrumBatch, manifest: Manifest,
                          digest: str, storage_options: dict | None = None) -> ShardRecord:
    """Write shard ``name`` of the job ``digest``, then its commit record."""
    record = write_shard(url, name, batch, manifest, storage_options).record
    fs, base = resolve(url, storage_options)
    progress = {"digest": digest, "record": record.model_dump(mode="json")}
    write_bytes_atomic(fs, _record_path(base, name), json.dumps(progress).encode())
    return record


def progress_records(url: str, digest: str, storage_options: dict | None = None
                     ) -> dict[str, dict[str, Any]]:
    """The commit records ``_progress/<name>.json`` of an unfinished run of job ``digest``
    at ``url``, by name; a record of another job is refused."""
    fs, base = resolve(url, storage_options)
    folder = join(base, PROGRESS_DIR)
    fs.invalidate_cache()
    if not retrying(lambda: fs.exists(folder), f"stat {folder}"):
        return {}
    done = {}
    for path in retrying(lambda: fs.ls(folder, detail=False), f"list {folder}"):
        data = json.loads(read_bytes(fs, path))
        if data["digest"] != digest:
            raise SpectraError("a run with a different configuration was started here; use "
                               "--overwrite or another location", file=url)
        done[path.rsplit("/", 1)[-1].removesuffix(".json")] = data
    return done


def committed_shards(url: str, digest: str, storage_options: dict | None = None
                     ) -> dict[str, ShardRecord]:
    """The shards an unfinished run of job ``digest`` at ``url`` committed, by file name."""
    records = [ShardRecord.model_validate(data["record"])
               for data in progress_records(url, digest, storage_options).values()]
    return {record.path: record for record in records}


def prepare_destination(url: str, manifest: Manifest, overwrite: bool,
                        storage_options: dict | None) -> Manifest | None:
    """Make room for a job writing ``manifest`` at ``url``: the existing dataset if it is
    this very job's finished output (None otherwise); refuse another dataset unless
    ``overwrite``, which also forgets an unfinished run."""
    fs, base = resolve(url, storage_options)
    if dataset_exists(url, storage_options):
        if not overwrite:
            existing = load_manifest(url, storage_options)
            if existing.provenance.config == manifest.provenance.config:
                return existing
            raise SpectraError("a different dataset exists here (use --overwrite)", file=url)
        delete_dataset(url, storage_options)
    if overwrite and fs.exists(join(base, PROGRESS_DIR)):
        fs.rm(join(base, PROGRESS_DIR), recursive=True)
    return None


def run_shard_job(url: str, manifest: Manifest, shards: Sequence[str], digest: str,
                  task: Callable[..., ShardRecord], args: Sequence[Any], *,
                  overwrite: bool = False, storage_options: dict | None = None,
                  address: str | None = None, num_cpus: float = 1.0,
                  progress: bool = True, what: str = "shards") -> Manifest:
    """Run ``task(shard_name, *args)`` as a Ray task for every shard not yet committed (the
    task writes it with :func:`write_committed_shard`), then commit the manifest with the
    shards in the order of ``shards``."""
    finished = prepare_destination(url, manifest, overwrite, storage_options)
    if finished is not None:
        return finished
    done = committed_shards(url, digest, storage_options)
    todo = [s for s in shards if s not in done]
    if todo:
        init_ray(address)
        remote = ray.remote(num_cpus=num_cpus)(task)
        refs = [ray.put(a) for a in args]
        pending = {remote.remote(s, *refs): s for s in todo}
        with Progress(disable=not progress, transient=True) as bar:
            job = bar.add_task(what, total=len(shards), completed=len(done))
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                done[pending.pop(ready[0])] = ray.get(ready[0])
                bar.advance(job)
    committed = manifest.model_copy(update={"shards": [done[s] for s in shards]})
    commit_manifest(url, committed, storage_options)
    return committed
