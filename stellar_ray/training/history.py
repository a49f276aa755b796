"""A training run's metrics epoch by epoch: ``<run>/history.json``, rewritten atomically at
every report, so that a run can be followed (``stellar-ray dashboard --runs``) while it
trains and after it ends. Ray Train keeps the metrics of its retained checkpoints only;
this keeps every reported epoch. A resumed run replaces the epochs it repeats."""

from __future__ import annotations

import json
import math
from typing import Any

from ..spectra.storage import join, read_bytes, resolve, retrying, write_bytes_atomic

HISTORY_FILE = "history.json"
#: Ray Train's record of the retained checkpoints (with their metrics): the fallback for
#: runs made before history.json existed.
CHECKPOINT_SNAPSHOT = "checkpoint_manager_snapshot.json"


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numeric metrics of a report (JSON has no NaN or infinity)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class RunHistory:
    """The per-epoch metrics of the run stored at ``run_url`` (its folder)."""

    def __init__(self, run_url: str, storage_options: dict | None = None) -> None:
        self.fs, base = resolve(run_url, storage_options)
        self.path = join(base, HISTORY_FILE)
        self.epochs: dict[int, dict[str, float]] = {
            int(m["epoch"]): m for m in _read_list(self.fs, self.path)}

    def record(self, metrics: dict[str, Any]) -> None:
        """Keep one report (it must carry ``epoch``); later epochs of an earlier attempt
        are dropped, since the run went back before them."""
        if "epoch" not in metrics:
            return
        epoch = int(metrics["epoch"])
        self.epochs = {e: m for e, m in self.epochs.items() if e < epoch}
        self.epochs[epoch] = _numbers(metrics)
        rows = [self.epochs[e] for e in sorted(self.epochs)]
        write_bytes_atomic(self.fs, self.path, json.dumps(rows).encode())


def _read_list(fs: Any, path: str) -> list[dict[str, float]]:
    if not retrying(lambda: fs.exists(path), f"stat {path}"):
        return []
    return json.loads(read_bytes(fs, path))


def read_history(run_url: str, storage_options: dict | None = None) -> list[dict[str, float]]:
    """Per-epoch metrics of a run, by epoch: its history.json, else the metrics of the
    checkpoints Ray Train retained (empty when the folder holds neither)."""
    fs, base = resolve(run_url, storage_options)
    rows = _read_list(fs, join(base, HISTORY_FILE))
    if not rows:
        snapshot = join(base, CHECKPOINT_SNAPSHOT)
        if retrying(lambda: fs.exists(snapshot), f"stat {snapshot}"):
            kept = json.loads(read_bytes(fs, snapshot)).get("checkpoint_results", [])
            rows = [_numbers(k.get("metrics", {})) for k in kept]
    return sorted((r for r in rows if "epoch" in r), key=lambda r: r["epoch"])
