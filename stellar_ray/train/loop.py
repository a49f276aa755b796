"""The Ray Train worker loop, the same for every model family.

Each worker trains its shard of the training dataset (data parallel, DDP through Ray's
``prepare_model``); rank 0 evaluates the whole validation set once per epoch and saves the
checkpoint. A restarted run, or a replaced worker, continues from the last checkpoint.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from typing import Any

import numpy as np
import ray.train
import torch
from ray.train import Checkpoint
from ray.train.collective import broadcast_from_rank_zero
from ray.train.torch import prepare_model
from safetensors.torch import load as load_tensors

from ..models.registry import build
from .config import TrainConfig
from .metrics import coverage, emulator_metrics, regression_metrics
from .objectives import Normalisation, labels_of, loss_of, lr_lambda, prepare

CHECKPOINT_FILE = "state.pt"


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite."""


def _device() -> torch.device:
    return ray.train.torch.get_device() if torch.cuda.is_available() else torch.device("cpu")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def validate(model: torch.nn.Module, cfg: TrainConfig, norm: Normalisation, data,
             device: torch.device, generator: torch.Generator) -> dict[str, float]:
    """Validation loss and the family's metrics over the whole validation set (rank 0 only:
    the module is unwrapped from DDP so that no collective waits for the other ranks)."""
    model = _unwrap(model)
    model.eval()
    losses, preds, trues, loggs, samples = [], [], [], [], []
    with torch.no_grad():
        for batch in data.iter_batches(batch_size=cfg.optim.batch_size, batch_format="numpy"):
            inputs, target = prepare(batch, cfg.family, cfg.model, norm, 0.0, False, generator)
            inputs = tuple(x.to(device) for x in inputs)
            target = target.to(device)
            losses.append(float(loss_of(model, inputs, target, cfg.family, cfg.model,
                                        cfg.loss)))
            if cfg.family == "emulator":
                preds.append(model(*inputs).cpu().numpy())
                trues.append(target.cpu().numpy())
            elif cfg.family == "regressor":
                preds.append(norm.unz(model(*inputs).cpu().numpy()))
                trues.append(labels_of(batch, norm.labels))
            else:
                draws = model.sample(inputs[0], 64).cpu().numpy()
                samples.append(norm.unz(draws))
                preds.append(samples[-1].mean(axis=0))
                trues.append(labels_of(batch, norm.labels))
            if "logg" in batch:
                loggs.append(np.asarray(batch["logg"], dtype=float))
    out = {"val_loss": float(np.mean(losses))}
    if cfg.family == "emulator":
        out.update(emulator_metrics(np.concatenate(preds), np.concatenate(trues)))
        return out
    pred, true = np.concatenate(preds), np.concatenate(trues)
    out.update(regression_metrics(pred, true, norm.labels,
                                  np.concatenate(loggs) if loggs else None))
    if cfg.family == "posterior":
        out["nll"] = out["val_loss"]
        out.update(coverage(np.concatenate(samples, axis=1), true))
    return out


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


def _update_plateau(plateau: dict[str, Any], improved: bool, cfg: TrainConfig) -> None:
    """SM-Net's schedule: after ``plateau_patience`` epochs without improvement multiply the
    learning rate and the batch size by ``plateau_factor``; early stopping after
    ``early_stop_patience`` such epochs."""
    plateau["stale"] = 0 if improved else plateau["stale"] + 1
    patience = cfg.optim.early_stop_patience
    if patience is not None and plateau["stale"] >= patience:
        plateau["stop"] = True
    if cfg.optim.schedule == "plateau" and plateau["stale"] > 0 and \
            plateau["stale"] % cfg.optim.plateau_patience == 0:
        plateau["scale"] *= cfg.optim.plateau_factor
        plateau["batch"] = max(1, int(plateau["batch"] * cfg.optim.plateau_factor))


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    # Ray hands batches over as read-only arrays; the tensors made from them are only read.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    cfg = TrainConfig.model_validate(loop_config["config"])
    os.environ.update(cfg.worker_env)
    norm = Normalisation(**loop_config["norm"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = _device()
    torch.manual_seed(cfg.seed + rank)
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank)

    model = build(cfg.model, **cfg.model_args)
    if loop_config.get("init_state"):
        model.load_state_dict(load_tensors(loop_config["init_state"]), strict=False)
    model = prepare_model(model) if world > 1 or device.type != "cpu" else model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr,
                                  weight_decay=cfg.optim.weight_decay)
    steps_per_epoch = max(1, math.ceil(loop_config["train_rows"] / world / cfg.optim.batch_size))
    plateau = {"scale": 1.0, "batch": cfg.optim.batch_size, "stale": 0, "stop": False}
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(
        steps_per_epoch * cfg.optim.epochs, cfg.optim.warmup_fraction,
        cfg.optim.min_lr / cfg.optim.lr) if cfg.optim.schedule == "cosine"
        else (lambda _: plateau["scale"]))

    start_epoch, best = 0, math.inf
    # this run's own last checkpoint, else one handed over from another run (PBT's exploit)
    checkpoint = ray.train.get_checkpoint() or loop_config.get("resume_from")
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, CHECKPOINT_FILE), weights_only=True,
                               map_location=device)
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        plateau.update(state.get("plateau", {}))
        # The checkpoint may come from another trial (PBT's exploit): its weights and moments
        # carry over, this run's learning rate and weight decay apply from here on.
        scheduler.base_lrs = [cfg.optim.lr] * len(optimizer.param_groups)
        for group in optimizer.param_groups:
            group["weight_decay"] = cfg.optim.weight_decay
            group["lr"] = cfg.optim.lr * scheduler.lr_lambdas[0](scheduler.last_epoch)
        generator.manual_seed(cfg.seed * 1000 + rank + 7919 * start_epoch)

    train_data = ray.train.get_dataset_shard("train")
    val_data = ray.train.get_dataset_shard("validation")
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, cfg.optim.epochs):
        _injected_failure(epoch, rank)
        model.train()
        total, count, seen, started = 0.0, 0, 0, time.perf_counter()
        for batch in train_data.iter_batches(batch_size=int(plateau["batch"]),
                                             batch_format="numpy"):
            inputs, target = prepare(batch, cfg.family, cfg.model, norm, cfg.data.noise_alpha,
                                     True, generator)
            inputs = tuple(x.to(device) for x in inputs)
            # bf16 autocast on GPUs only: on CPUs bf16 arithmetic is hundreds of times slower
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                enabled=device.type == "cuda" and cfg.optim.bf16):
                loss = loss_of(model, inputs, target.to(device), cfg.family, cfg.model,
                               cfg.loss).float()
            if not torch.isfinite(loss):
                last = checkpoint.path if checkpoint else "none (no epoch finished yet)"
                raise NonFiniteLoss(f"non-finite loss ({float(loss)}) at epoch {epoch}, step "
                                    f"{step}; the last good checkpoint is {last}")
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            total, count, step = total + loss.item(), count + 1, step + 1
            seen += len(target)
        seconds = time.perf_counter() - started
        metrics: dict[str, Any] = {"epoch": epoch, "train_loss": total / max(count, 1),
                                   "lr": scheduler.get_last_lr()[0], "epoch_train_s": seconds,
                                   "train_spectra_per_s": seen * world / max(seconds, 1e-9)}
        report_checkpoint = None
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                metrics.update(validate(model, cfg, norm, val_data, device, generator))
                improved = metrics["val_loss"] < best
                best = float(min(best, metrics["val_loss"]))
                metrics["best_val_loss"] = best
                _update_plateau(plateau, improved, cfg)
                metrics["batch_size"] = int(plateau["batch"])
                torch.save({"model": _unwrap(model).state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "epoch": epoch,
                            "best": best, "plateau": dict(plateau)},
                           os.path.join(tmp, CHECKPOINT_FILE))
                report_checkpoint = Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=report_checkpoint)
        checkpoint = ray.train.get_checkpoint() or checkpoint
        if world > 1:  # every rank follows rank 0's decisions
            plateau.update(broadcast_from_rank_zero(dict(plateau)))
        if plateau["stop"]:
            break
