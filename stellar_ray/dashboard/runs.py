"""Training runs and sweeps found under a folder, for the dashboard: a run is a folder with
a ``history.json`` or Ray Train's checkpoint snapshot (``stellar-ray train`` output, or one
trial of a sweep); a sweep is a folder with ``results.parquet`` (``stellar-ray sweep``)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from ..spectra.storage import join, read_bytes, resolve
from ..training.history import CHECKPOINT_SNAPSHOT, HISTORY_FILE
from ..training.sweep import RESULTS_FILE

#: How deep below the folder runs and sweeps are looked for.
MAX_DEPTH = 4


@dataclass(frozen=True)
class Found:
    """Run folders and sweep folders (URLs in the folder's scheme), by name relative to the
    folder searched."""

    runs: dict[str, str]
    sweeps: dict[str, str]


def find_runs(url: str, storage_options: dict | None = None) -> Found:
    """Every run and sweep up to :data:`MAX_DEPTH` folders below ``url``."""
    fs, base = resolve(url, storage_options)
    prefix = url.rstrip("/")
    runs, sweeps = {}, {}
    for path in sorted(fs.find(base, maxdepth=MAX_DEPTH + 1)):
        folder, _, name = path.rpartition("/")
        relative = folder[len(base):].strip("/") or "."
        location = prefix if relative == "." else f"{prefix}/{relative}"
        if name in (HISTORY_FILE, CHECKPOINT_SNAPSHOT):
            runs[relative] = location
        elif name == RESULTS_FILE:
            sweeps[relative] = location
    return Found(runs=runs, sweeps=sweeps)


def sweep_table(url: str, storage_options: dict | None = None) -> pa.Table:
    """A sweep's trial table: one row per trial, its parameters (``param/...``) and last
    metrics."""
    fs, base = resolve(url, storage_options)
    return pq.read_table(pa.BufferReader(read_bytes(fs, join(base, RESULTS_FILE))))
