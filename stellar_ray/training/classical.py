"""``stellar-ray train`` for the classical baselines (paper 003 §4), which are fitted, not
trained by gradient descent.

Inputs and targets are the regressors' (the task's ``prepare``: model flux with one draw of
fresh noise α ε σ where the dataset keeps it, z-scored labels). Ridge accumulates its normal
equations over the training set's Ray Data batches as they stream in and solves once;
LightGBM runs under Ray Train's ``LightGBMTrainer``, data parallel across
``scaling.num_workers`` workers with LightGBM's own network protocol, and rank 0 returns the
text models. The validation metrics and the artifact are those of every other family.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
import torch

from ..models.normalisation import Normalisation
from ..models.registry import build, card
from ..spectra.grid import WavelengthGrid
from .config import TrainConfig
from .loop import ignore_read_only_batches

STATE_FILE = "model.safetensors"


def _inputs(cfg: TrainConfig, norm: Normalisation, wave: np.ndarray, batches,
            generator: torch.Generator):
    """(features' flux (B, L), z-scored targets (B, K)) per training batch."""
    task = card(cfg.model).task
    ignore_read_only_batches()
    for batch in batches:
        (flux,), target = task.prepare(batch, norm, wave, noise_alpha=cfg.data.noise_alpha,
                                       train=True, generator=generator)
        yield flux, target.numpy()


def fit_ridge(cfg: TrainConfig, norm: Normalisation, wave: np.ndarray, train_ds
              ) -> torch.nn.Module:
    """Ridge from normal equations summed over the streamed training batches."""
    from ..models.classical import NormalEquations, features

    model = build(cfg.model, **cfg.model_args)
    sums = NormalEquations(cfg.model_args["n_pix"], cfg.model_args["n_labels"])
    generator = torch.Generator().manual_seed(cfg.seed)
    batches = train_ds.iter_batches(batch_size=cfg.optim.batch_size, batch_format="numpy")
    for flux, target in _inputs(cfg, norm, wave, batches, generator):
        sums.add(features(flux).numpy(), target)
    return model.set_solution(*sums.solve(model.alpha))


def _gbdt_worker(loop_config: dict[str, Any]) -> None:
    """LightGBMTrainer's loop: this worker's rows, LightGBM's network parameters, and the
    fitted models reported by rank 0 as a safetensors checkpoint."""
    import ray.train
    from ray.train.lightgbm import get_network_params
    from safetensors.torch import save_file

    cfg = TrainConfig.model_validate(loop_config["config"])
    norm = Normalisation.model_validate(loop_config["norm"])
    wave = WavelengthGrid.model_validate(loop_config["grid"]).wavelength()
    rank = ray.train.get_context().get_world_rank()
    shard = ray.train.get_dataset_shard("train")
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    parts = list(_inputs(cfg, norm, wave, shard.iter_batches(
        batch_size=cfg.optim.batch_size, batch_format="numpy"), generator))
    flux = torch.cat([p[0] for p in parts])
    target = np.concatenate([p[1] for p in parts])
    model = build(cfg.model, **cfg.model_args)
    model.params["num_threads"] = max(1, int(cfg.scaling.cpus_per_worker))
    model.fit(flux, target, network=get_network_params())
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                      os.path.join(tmp, STATE_FILE))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report({"train_rows": len(target)}, checkpoint=checkpoint)


def fit_gbdt(cfg: TrainConfig, norm: Normalisation, grid: WavelengthGrid, train_ds,
             storage: str) -> torch.nn.Module:
    """LightGBM through Ray Train's LightGBMTrainer."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.lightgbm import LightGBMTrainer
    from safetensors.torch import load_file

    trainer = LightGBMTrainer(
        _gbdt_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"),
                           "norm": norm.model_dump(mode="json"),
                           "grid": grid.model_dump(mode="json")},
        scaling_config=ScalingConfig(num_workers=cfg.scaling.num_workers,
                                     resources_per_worker={"CPU": cfg.scaling.cpus_per_worker}),
        run_config=RunConfig(name=cfg.name, storage_path=storage),
        datasets={"train": train_ds})
    result = trainer.fit()
    if result.error:
        raise result.error
    model = build(cfg.model, **cfg.model_args)
    with result.checkpoint.as_directory() as d:
        model.load_state_dict(load_file(os.path.join(d, STATE_FILE)))
    return model


def fit_classical(cfg: TrainConfig, norm: Normalisation, grid: WavelengthGrid, train_ds,
                  storage: str) -> torch.nn.Module:
    """The baseline of ``cfg.model`` fitted as its task says."""
    ignore_read_only_batches()
    if card(cfg.model).task.fitting == "normal_equations":
        return fit_ridge(cfg, norm, grid.wavelength(), train_ds)
    return fit_gbdt(cfg, norm, grid, train_ds, storage)
