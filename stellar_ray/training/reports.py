"""Each epoch's report, as it happens, in the process that started the training.

Ray Train runs its loop under a controller actor; a :class:`ForwardReports` callback there
hands every epoch's metrics (rank 0's, with the validation metrics) and checkpoint through
a Ray queue to :func:`fit_reporting`, which runs the trainer in a thread and calls
``on_report`` in the caller's thread (each report also goes to the run's history.json):
a progress line for ``stellar-ray train``, a
``tune.report`` with the checkpoint for a sweep's trial (so that PBT can copy weights).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import ray.train
from ray.train.torch import TorchTrainer
from ray.util.queue import Empty, Queue

from ..models.tasks import Task
from .history import RunHistory

OnReport = Callable[[dict[str, Any], "ray.train.Checkpoint | None"], None]


class ForwardReports(ray.train.UserCallback):
    """Runs in the Train controller: puts (metrics, checkpoint) of each report on a queue."""

    def __init__(self, reports: Queue) -> None:
        self.reports = reports

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: ray.train.Checkpoint | None) -> None:
        self.reports.put((metrics[0], checkpoint))


def report_queue() -> Queue:
    """A queue for :class:`ForwardReports` that holds no CPU."""
    return Queue(actor_options={"num_cpus": 0})


def fit_reporting(trainer: TorchTrainer, reports: Queue, on_report: OnReport,
                  history: RunHistory | None = None) -> ray.train.Result:
    """``trainer.fit()``, calling ``on_report`` for every report as it arrives (after
    recording it in ``history``); a failure of the fit is raised here. The queue is shut
    down when the fit ends."""
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # re-raised in the caller's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=fit, name="train-fit", daemon=True)
    worker.start()
    try:
        while worker.is_alive() or not reports.empty():
            try:
                metrics, checkpoint = reports.get(timeout=0.5)
            except Empty:
                continue
            if history is not None:
                history.record(metrics)
            on_report(metrics, checkpoint)
        worker.join()
    finally:
        reports.shutdown()  # the queue's actor is this fit's alone
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def epoch_line(metrics: dict[str, Any], epochs: int, task: Task, labels: Sequence[str]
               ) -> str:
    """One line for an epoch: losses, the task's headline metrics, time and throughput."""
    parts = [f"epoch {int(metrics.get('epoch', -1)) + 1}/{epochs}"]
    if "train_loss" in metrics:
        parts.append(f"loss {metrics['train_loss']:.4g}")
    if "val_loss" in metrics:
        parts.append(f"val {metrics['val_loss']:.4g}")
    parts += [f"{k} {v:.4g}" for k, v in task.headline(metrics, labels).items()]
    if "epoch_train_s" in metrics:
        parts.append(f"{metrics['epoch_train_s']:.1f} s "
                     f"({metrics.get('train_spectra_per_s', math.nan):.0f} spectra/s)")
    return "  ".join(parts)
