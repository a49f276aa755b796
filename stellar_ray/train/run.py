"""``stellar-ray train``: check the configuration against the data, fit normalisation,
run the Ray Train ``TorchTrainer``, and write the artifact from the best checkpoint."""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    DataConfig,
    FailureConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchTrainer

from ..models.registry import build, card
from ..runtime import init_ray
from ..simulate.labels import INDEX
from ..simulate.survey import shard_labels, simulated_dataset, survey_manifest
from ..spectra.dataset import load_manifest
from ..spectra.errors import SpectraError
from ..spectra.manifest import Manifest
from ..spectra.raydata import read_spectra
from ..spectra.schema import MODEL_FLUX
from .artifact import load_artifact, reference_inputs, write_artifact
from .config import TrainConfig
from .loop import CHECKPOINT_FILE, train_loop_per_worker
from .objectives import fit_normalisation


@dataclass
class TrainResult:
    """Where things went and how the best epoch did."""

    artifact: str
    run_path: str
    best_metrics: dict[str, Any]
    epochs: int
    history: list[dict[str, Any]]  # metrics of the kept checkpoints, by epoch


def _in_validation(ids: np.ndarray, fraction: float) -> np.ndarray:
    """Stable split by CRC-32 of the spectrum id."""
    return np.array([zlib.crc32(str(i).encode()) % 10_000 < fraction * 10_000 for i in ids])


def _check_data(cfg: TrainConfig, manifest: Manifest, url: str) -> dict[str, Any]:
    """Refuse data that cannot train this model; fill n_pix and n_labels when not given."""
    missing = [n for n in cfg.data.labels if n not in manifest.label_names]
    if missing:
        raise SpectraError(f"label '{missing[0]}' is not in the dataset (it has "
                           f"{manifest.label_names})", file=url, field=missing[0])
    args = dict(cfg.model_args)
    name = cfg.model
    family = card(name).family
    if family == "emulator":
        args.setdefault("n_labels", len(cfg.data.labels))
        if name != "transformer_payne":
            args.setdefault("n_pix", manifest.npix)
    else:
        args.setdefault("n_labels", len(cfg.data.labels))
        args.setdefault("n_pix", manifest.npix)
    if args.get("n_labels") != len(cfg.data.labels):
        raise SpectraError(f"model_args.n_labels = {args['n_labels']} but data.labels lists "
                           f"{len(cfg.data.labels)}", field="model_args.n_labels")
    if "n_pix" in args and args["n_pix"] != manifest.npix:
        raise SpectraError(f"model expects {args['n_pix']} pixels, the dataset grid has "
                           f"{manifest.npix}", file=url, field="model_args.n_pix")
    return args


def _columns(cfg: TrainConfig, manifest: Manifest) -> list[str]:
    cols = ["flux", "sigma", *cfg.data.labels]
    if manifest.model_flux:
        cols.append(MODEL_FLUX)
    if "logg" in manifest.label_names and "logg" not in cols:
        cols.append("logg")
    return cols


@dataclass
class PreparedRun:
    """A configured trainer and what the artifact needs afterwards."""

    cfg: TrainConfig
    trainer: TorchTrainer
    norm: Any
    grid: Any
    validation: Any
    storage: str


def _manifest(cfg: TrainConfig) -> Manifest:
    """What the training data hold: the dataset's manifest, or the simulated survey's."""
    if cfg.data.simulate is not None:
        return survey_manifest(cfg.data.simulate)
    return load_manifest(cfg.data.train, cfg.data.storage_options)


def _datasets(cfg: TrainConfig, manifest: Manifest) -> tuple[Any, Any]:
    """(training dataset, materialised validation dataset)."""
    so = cfg.data.storage_options
    task = {"num_cpus": cfg.data.cpus_per_task}
    columns = _columns(cfg, manifest)
    val_ds = None
    if cfg.data.simulate is not None:
        sim = cfg.data.simulate
        # lazy: the generator runs again for every epoch
        train_ds = simulated_dataset(sim, columns, task)
        n_val = max(1, round(cfg.data.validation_fraction * sim.total))
        val_ds = simulated_dataset(sim.model_copy(update={"seed": sim.seed + 1,
                                                          "n_spectra": n_val}), columns, task)
    else:
        train_ds = read_spectra(cfg.data.train, columns=columns, storage_options=so, **task)
        if not cfg.data.validation:
            frac = cfg.data.validation_fraction
            val_ds = train_ds.map_batches(_validation_rows(frac, True), **task)
            train_ds = train_ds.map_batches(_validation_rows(frac, False), **task)
        train_ds = train_ds.materialize()
    if cfg.data.validation:
        if load_manifest(cfg.data.validation, so).grid != manifest.grid:
            raise SpectraError("validation grid differs from the training grid",
                               file=cfg.data.validation)
        val_ds = read_spectra(cfg.data.validation, columns=columns, storage_options=so,
                              **task)
    return train_ds, val_ds.materialize()


def _validation_rows(fraction: float, keep: bool):
    """A batch transform keeping the rows whose spectrum_id hashes into (``keep``) or out of
    the validation set."""
    def select(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = _in_validation(batch["spectrum_id"], fraction) == keep
        return {k: v[rows] for k, v in batch.items()}
    return select


def _training_labels(cfg: TrainConfig, train_ds) -> np.ndarray:
    """(N, K) training labels, for the normalisation; a simulated survey's come from its prior
    without running the generator."""
    if cfg.data.simulate is not None:
        sim = cfg.data.simulate
        draws = np.concatenate([shard_labels(sim, k)[0] for k in range(sim.n_shards)])
        return draws[:, [INDEX[n] for n in cfg.data.labels]].astype(float)
    table = pa.concat_tables(list(train_ds.select_columns(cfg.data.labels,
                                                          num_cpus=cfg.data.cpus_per_task)
                                  .iter_batches(batch_format="pyarrow")))
    return np.stack([table.column(n).to_numpy(zero_copy_only=False)
                     for n in cfg.data.labels], axis=1).astype(float)


def prepare_run(cfg: TrainConfig, callbacks: tuple = (), resume_from: Checkpoint | None = None
                ) -> PreparedRun:
    """Check the data, fit the normalisation and build the ``TorchTrainer`` (Ray must run).
    ``resume_from``: a checkpoint of another run to continue from (PBT's exploit step); the
    hyperparameters of ``cfg`` then replace the checkpoint's."""
    manifest = _manifest(cfg)
    cfg = cfg.model_copy(update={"model_args": _check_data(cfg, manifest, cfg.data.source)})
    train_ds, val_ds = _datasets(cfg, manifest)
    labels = _training_labels(cfg, train_ds)
    flux_sample = None
    if cfg.family == "emulator":
        col = MODEL_FLUX if manifest.model_flux else "flux"
        source = val_ds if cfg.data.simulate is not None else train_ds  # no extra generation
        flux_sample = next(iter(source.iter_batches(batch_size=512, batch_format="numpy")))[col]
    norm = fit_normalisation(labels, cfg.data.labels, cfg.family, cfg.model, flux_sample,
                             manifest.grid.wavelength())
    init_state = None
    if cfg.init_from:
        base = load_artifact(cfg.init_from, cfg.data.storage_options)
        init_state = widen_input(base.model.state_dict(), cfg)

    storage = cfg.output if "://" in cfg.output else os.path.abspath(cfg.output)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "norm": norm.to_dict(),
                           "train_rows": len(labels), "init_state": init_state,
                           "resume_from": resume_from},
        scaling_config=ScalingConfig(num_workers=cfg.scaling.num_workers,
                                     use_gpu=cfg.scaling.use_gpu,
                                     resources_per_worker={"CPU": cfg.scaling.cpus_per_worker}),
        run_config=RunConfig(name=cfg.name, storage_path=storage,
                             failure_config=FailureConfig(max_failures=cfg.scaling.max_failures),
                             checkpoint_config=CheckpointConfig(
                                 num_to_keep=cfg.keep_checkpoints,
                                 checkpoint_score_attribute="val_loss",
                                 checkpoint_score_order="min"),
                             callbacks=list(callbacks)),
        datasets={"train": train_ds, "validation": val_ds},
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    return PreparedRun(cfg, trainer, norm, manifest.grid, val_ds, storage)


def train(cfg: TrainConfig, address: str | None = None) -> TrainResult:
    """Run the training described by ``cfg`` (resuming if its output already holds a run)
    and write the artifact of the best epoch under ``<output>/<name>/artifact``."""
    init_ray(address)
    run = prepare_run(cfg)
    cfg = run.cfg
    result = run.trainer.fit()
    best, metrics = _best(result)
    with best.as_directory() as d:
        state = torch.load(os.path.join(d, CHECKPOINT_FILE), weights_only=True)
    model = build(cfg.model, **cfg.model_args)
    model.load_state_dict(state["model"])
    val_batch = next(iter(run.validation.iter_batches(batch_size=8, batch_format="numpy")))
    artifact_url = f"{run.storage.rstrip('/')}/{cfg.name}/artifact"
    write_artifact(artifact_url, model, cfg.model, cfg.model_args, run.norm, run.grid,
                   {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                   reference_inputs(cfg.family, run.norm, val_batch),
                   cfg.model_dump(mode="json"), storage_options=cfg.data.storage_options)
    history = sorted((m for _, m in result.best_checkpoints or []), key=lambda m: m["epoch"])
    return TrainResult(artifact=artifact_url, run_path=f"{run.storage}/{cfg.name}",
                       best_metrics=metrics, epochs=int(result.metrics.get("epoch", -1)) + 1,
                       history=history)


def _best(result) -> tuple[Any, dict[str, Any]]:
    if result.error:
        raise result.error
    pairs = result.best_checkpoints or []
    if not pairs:
        raise RuntimeError("training finished without a checkpoint")
    return min(pairs, key=lambda p: p[1].get("val_loss", np.inf))


def widen_input(state: dict[str, torch.Tensor], cfg: TrainConfig) -> bytes:
    """Fine-tuning (paper 002 §3.4): the base model's weights, with any first-layer matrix
    that takes fewer labels than the new model widened by zero columns for the extra ones."""
    from safetensors.torch import save as save_tensors

    target = build(cfg.model, **cfg.model_args).state_dict()
    out = {}
    for key, value in state.items():
        want = target.get(key)
        if want is None:
            continue
        if value.shape != want.shape and value.dim() == 2 and value.shape[0] == want.shape[0] \
                and value.shape[1] < want.shape[1]:
            grown = torch.zeros_like(want)
            grown[:, :value.shape[1]] = value
            value = grown
        if value.shape == want.shape:
            out[key] = value.contiguous()
    return save_tensors(out)
