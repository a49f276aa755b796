"""The Ray Train worker loop, the same for every model family (the model card's task says
what a batch means).

Each worker trains its shard of the training dataset (data parallel, DDP through Ray's
``prepare_model``), held in its memory when the driver says it fits (``in_memory``); at every
``optim.validate_every``-th epoch rank 0 evaluates the whole validation set and saves the
checkpoint, and all ranks report. A restarted run, or a replaced worker, continues from the
last checkpoint.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray.train
import torch
from ray.train import Checkpoint
from ray.train.collective import broadcast_from_rank_zero
from ray.train.torch import prepare_model
from safetensors.torch import load as load_tensors

from ..errors import ModelError
from ..models.normalisation import Normalisation
from ..models.registry import build, card
from ..models.tasks import Task
from ..runtime import pick_device
from ..spectra.grid import WavelengthGrid
from ..threads import use_allotted_threads
from .config import TrainConfig
from .in_memory import InMemoryShard
from .schedule import Plateau, lr_lambda

CHECKPOINT_FILE = "state.pt"
STREAM_SHUFFLE_ROWS = 2048
"""Rows in Ray Data's local shuffle buffer when a stored shard streams from storage (a shard
held in memory is shuffled whole; a simulated or observed one is drawn in random order)."""


class NonFiniteLoss(ModelError):
    """The loss became NaN or infinite."""


@dataclass
class Worker:
    """What one training worker knows: its configuration, task, normalisation, the data's
    wavelength grid (Å), its rank and device, and its random generator."""

    cfg: TrainConfig
    task: Task
    norm: Normalisation
    wave: np.ndarray
    rank: int
    world: int
    device: torch.device
    generator: torch.Generator
    shuffle_rows: int | None = None  # Ray Data's local shuffle buffer (None: none)


@dataclass
class Optimisation:
    """The model with its optimiser, schedule and plateau state, and the modules kept
    fixed (in eval mode) while the rest trains."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    plateau: Plateau
    frozen: list[torch.nn.Module]


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _worker(loop_config: dict[str, Any]) -> Worker:
    cfg = TrainConfig.model_validate(loop_config["config"])
    os.environ.update(cfg.worker_env)
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    use_allotted_threads(cfg.scaling.cpus_per_worker)
    torch.manual_seed(cfg.seed + rank)
    device = ray.train.torch.get_device() if torch.cuda.is_available() else pick_device()
    return Worker(cfg=cfg, task=card(cfg.model).task,
                  norm=Normalisation.model_validate(loop_config["norm"]),
                  wave=WavelengthGrid.model_validate(loop_config["grid"]).wavelength(),
                  rank=rank, world=ctx.get_world_size(), device=device,
                  generator=torch.Generator().manual_seed(cfg.seed * 1000 + rank),
                  shuffle_rows=STREAM_SHUFFLE_ROWS if loop_config.get("stored") else None)


def freeze_all_but(model: torch.nn.Module, trained: tuple[str, ...]) -> list[torch.nn.Module]:
    """Stop gradients into every top-level module of ``model`` not named in ``trained``;
    returns the frozen modules."""
    frozen = [module for name, module in model.named_children() if name not in trained]
    if len(frozen) == len(list(model.children())):
        raise ModelError(f"none of {list(trained)} is a module of "
                         f"{type(model).__name__}", where="freeze_encoder")
    for module in frozen:
        module.requires_grad_(False)
    return frozen


def _optimisation(w: Worker, loop_config: dict[str, Any]) -> Optimisation:
    """A fresh model (warm-started as the task says, or from a base artifact's weights, its
    encoder frozen if asked) with AdamW over the trainable parameters and the configured
    schedule."""
    optim = w.cfg.optim
    model = build(w.cfg.model, **w.cfg.model_args)
    w.task.init_model(model, loop_config.get("warm_start"))
    if loop_config.get("init_state"):
        model.load_state_dict(load_tensors(loop_config["init_state"]), strict=False)
    frozen = freeze_all_but(model, w.task.head) if w.cfg.freeze_encoder else []
    model = prepare_model(model) if w.world > 1 or w.device.type != "cpu" else \
        model.to(w.device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=optim.lr,
                                  weight_decay=optim.weight_decay)
    plateau = Plateau(scale=1.0, batch=optim.batch_size)
    steps = max(1, math.ceil(loop_config["train_rows"] / w.world / optim.batch_size))
    factor = lr_lambda(steps * optim.epochs, optim.warmup_fraction, optim.min_lr / optim.lr) \
        if optim.schedule == "cosine" else (lambda _: plateau.scale)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return Optimisation(model, optimizer, scheduler, plateau, frozen)


def _restore(w: Worker, opt: Optimisation, checkpoint: Checkpoint | None
             ) -> tuple[int, float]:
    """Load ``checkpoint`` (this run's, or one handed over by PBT's exploit step) into
    ``opt``; returns (first epoch to run, best validation loss so far)."""
    if checkpoint is None:
        return 0, math.inf
    with checkpoint.as_directory() as d:
        state = torch.load(os.path.join(d, CHECKPOINT_FILE), weights_only=True,
                           map_location=w.device)
    _unwrap(opt.model).load_state_dict(state["model"])
    opt.optimizer.load_state_dict(state["optimizer"])
    opt.scheduler.load_state_dict(state["scheduler"])
    for key, value in state.get("plateau", {}).items():
        setattr(opt.plateau, key, value)
    # The checkpoint may come from another trial (PBT's exploit): its weights and moments
    # carry over, this run's learning rate and weight decay apply from here on.
    optim = w.cfg.optim
    opt.scheduler.base_lrs = [optim.lr] * len(opt.optimizer.param_groups)
    for group in opt.optimizer.param_groups:
        group["weight_decay"] = optim.weight_decay
        group["lr"] = optim.lr * opt.scheduler.lr_lambdas[0](opt.scheduler.last_epoch)
    start = state["epoch"] + 1
    w.generator.manual_seed(w.cfg.seed * 1000 + w.rank + 7919 * start)
    return start, state["best"]


def _train_epoch(w: Worker, opt: Optimisation, data, epoch: int,
                 checkpoint: Checkpoint | None) -> dict[str, Any]:
    """One pass over this worker's shard; returns the epoch's training metrics."""
    opt.model.train()
    for module in opt.frozen:  # fixed: no dropout, no batch-statistics updates
        module.eval()
    total, count, seen, started, compute = 0.0, 0, 0, time.perf_counter(), 0.0
    # bf16 autocast on GPUs only: on CPUs bf16 arithmetic is hundreds of times slower
    autocast = w.device.type == "cuda" and w.cfg.optim.bf16
    batches = data.iter_batches(batch_size=int(opt.plateau.batch), batch_format="numpy",
                                local_shuffle_buffer_size=w.shuffle_rows,
                                local_shuffle_seed=w.cfg.seed * 1_000_003 + 7919 * epoch
                                + w.rank)
    for batch in batches:
        step_started = time.perf_counter()
        inputs, target = w.task.prepare(batch, w.norm, w.wave,
                                        noise_alpha=w.cfg.data.noise_alpha, train=True,
                                        generator=w.generator)
        inputs = tuple(x.to(w.device) for x in inputs)
        with torch.autocast(device_type=w.device.type, dtype=torch.bfloat16,
                            enabled=autocast):
            loss = w.task.loss(opt.model, inputs, target.to(w.device), w.cfg.loss).float()
        if not torch.isfinite(loss):
            last = checkpoint.path if checkpoint else "none (no epoch finished yet)"
            raise NonFiniteLoss(f"non-finite loss ({float(loss)}) at epoch {epoch}, step "
                                f"{count}; the last good checkpoint is {last}",
                                where=w.cfg.model)
        opt.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(opt.model.parameters(), w.cfg.optim.grad_clip)
        opt.optimizer.step()
        opt.scheduler.step()
        total, count, seen = total + loss.item(), count + 1, seen + len(target)
        compute += time.perf_counter() - step_started
    seconds = time.perf_counter() - started
    return {"epoch": epoch, "train_loss": total / max(count, 1),
            "lr": opt.scheduler.get_last_lr()[0], "epoch_train_s": seconds,
            "epoch_compute_s": compute,
            "train_spectra_per_s": seen * w.world / max(seconds, 1e-9)}


def _interval_metrics(epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """The training metrics of the epochs since the last validation: the last epoch's
    number and learning rate, per-epoch means of the rest."""
    last = epochs[-1]
    out = {"epoch": last["epoch"], "lr": last["lr"], "epochs_since_validation": len(epochs)}
    for key in ("train_loss", "epoch_train_s", "epoch_compute_s", "train_spectra_per_s"):
        out[key] = float(np.mean([m[key] for m in epochs]))
    return out


def _validate_and_save(w: Worker, opt: Optimisation, data, metrics: dict[str, Any],
                       best: float, epoch: int, folder: str) -> tuple[float, Checkpoint]:
    """Rank 0: validation metrics into ``metrics``, the plateau state updated (for the
    epochs since the last validation), and the checkpoint written to ``folder``; returns
    (best validation loss, checkpoint). The module is unwrapped from DDP so that no
    collective waits for the other ranks."""
    model = _unwrap(opt.model)
    metrics.update(w.task.evaluate(
        model, w.norm, w.wave,
        data.iter_batches(batch_size=w.cfg.optim.batch_size, batch_format="numpy"),
        w.device, w.generator, w.cfg.loss))
    improved = metrics["val_loss"] < best
    best = float(min(best, metrics["val_loss"]))
    metrics["best_val_loss"] = best
    opt.plateau.update(improved, w.cfg.optim, metrics["epochs_since_validation"])
    metrics["batch_size"] = int(opt.plateau.batch)
    torch.save({"model": model.state_dict(), "optimizer": opt.optimizer.state_dict(),
                "scheduler": opt.scheduler.state_dict(), "epoch": epoch, "best": best,
                "plateau": opt.plateau.state()}, os.path.join(folder, CHECKPOINT_FILE))
    return best, Checkpoint.from_directory(folder)


def _injected_failure(epoch: int, rank: int) -> None:
    """Fault injection for tests and drills: with STELLAR_RAY_FAIL_AT="EPOCH:RANK:MARKER" the
    worker of that rank dies at the start of that epoch, once (MARKER records that it did)."""
    spec = os.environ.get("STELLAR_RAY_FAIL_AT")
    if not spec:
        return
    at_epoch, at_rank, marker = spec.split(":", 2)
    if int(at_epoch) == epoch and int(at_rank) == rank and not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(f"worker {rank} killed at epoch {epoch}\n")
        os._exit(1)


def ignore_read_only_batches() -> None:
    """Ray hands batches over as read-only arrays; the tensors made from them are only read,
    so torch's warning about it says nothing here."""
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's entry point on every worker (``loop_config`` from :mod:`.run`)."""
    ignore_read_only_batches()
    w = _worker(loop_config)
    opt = _optimisation(w, loop_config)
    # this run's own last checkpoint, else one handed over from another run (PBT's exploit)
    checkpoint = ray.train.get_checkpoint() or loop_config.get("resume_from")
    start, best = _restore(w, opt, checkpoint)
    train_data = ray.train.get_dataset_shard("train")
    val_data = ray.train.get_dataset_shard("validation")
    if loop_config.get("in_memory"):  # read once; Ray Data would stream it every epoch
        train_data = InMemoryShard.read(train_data)
        if w.rank == 0:
            val_data = InMemoryShard.read(val_data)
    train_rows = loop_config["train_rows"]
    since: list[dict[str, Any]] = []  # the epochs since the last validation
    interval_start = previous_start = None
    previous_epochs = 0
    for epoch in range(start, w.cfg.optim.epochs):
        _injected_failure(epoch, w.rank)
        if interval_start is None:
            interval_start = time.perf_counter()
        since.append(_train_epoch(w, opt, train_data, epoch, checkpoint))
        if not w.cfg.optim.validates(epoch, train_rows):
            continue
        metrics = _interval_metrics(since)
        if previous_start is not None:  # the last interval's wall time, report included
            metrics["previous_wall_s_per_epoch"] = \
                (interval_start - previous_start) / previous_epochs
        previous_start, previous_epochs = interval_start, len(since)
        interval_start, since = None, []
        saved = None
        if w.rank == 0:
            # uploaded in the background (Ray deletes the folder after): the next epoch
            # does not wait for storage
            best, saved = _validate_and_save(w, opt, val_data, metrics, best, epoch,
                                             tempfile.mkdtemp(prefix="stellar-ray-ckpt-"))
        ray.train.report(metrics, checkpoint=saved,
                         checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC,
                         delete_local_checkpoint_after_upload=saved is not None)
        checkpoint = ray.train.get_checkpoint() or checkpoint
        if w.world > 1:  # every rank follows rank 0's decisions
            state = broadcast_from_rank_zero(opt.plateau.state())
            for key, value in state.items():
                setattr(opt.plateau, key, value)
        if opt.plateau.stop:
            break
