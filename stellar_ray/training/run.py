"""``stellar-ray train``: check the configuration against the data, fit normalisation,
run the Ray Train ``TorchTrainer``, and write the artifact from the best checkpoint."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch
from ray.data.dataset import MaterializedDataset
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    DataConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchTrainer

from ..artifact import describe, load_artifact, write_artifact
from ..config_files import load_config
from ..errors import SpectraError
from ..models.normalisation import Normalisation
from ..models.novelty import InputNovelty
from ..models.registry import build, card
from ..quantities import default_unit
from ..runtime import init_ray, verbose
from ..simulation.labels import INDEX
from ..simulation.observe import observed_dataset, observed_manifest
from ..simulation.survey import shard_labels, simulated_dataset, survey_manifest
from ..spectra.dataset import load_manifest
from ..spectra.manifest import Manifest
from ..spectra.raydata import read_spectra
from ..spectra.schema import MODEL_FLUX
from ..spectra.split import ValidationRows
from .config import TrainConfig
from .history import RunHistory
from .in_memory import FLUX_COLUMNS, shard_bytes
from .loop import CHECKPOINT_FILE, train_loop_per_worker
from .reports import ForwardReports, epoch_line, fit_reporting, report_queue
from .uncertainty import calibration_text, check_uncertainties

#: Validation spectra the input-novelty reference is fitted on and the uncertainties are
#: checked on (at most), and the fewest the novelty reference needs.
VALIDATION_CHECK_SPECTRA = 1024
MIN_NOVELTY_SPECTRA = 16


@dataclass
class TrainResult:
    """Where things went and how the best epoch did."""

    artifact: str
    run_path: str
    best_metrics: dict[str, Any]
    epochs: int
    history: list[dict[str, Any]]  # metrics of the kept checkpoints, by epoch
    calibration: str = ""  # the uncertainties' validation coverage, as text

    def text(self, model: str) -> str:
        """The summary ``stellar-ray train`` prints."""
        best = self.best_metrics
        return (f"trained {model} for {self.epochs} epochs; best validation loss "
                f"{best.get('val_loss', float('nan')):.4g} at epoch "
                f"{int(best.get('epoch', -1)) + 1}\nartifact: {self.artifact}\n"
                f"checkpoints: {self.run_path}"
                + (f"\n{self.calibration}" if self.calibration else ""))


def _check_data(cfg: TrainConfig, manifest: Manifest, url: str) -> dict[str, Any]:
    """Refuse data that cannot train this model; fill in the model arguments the data
    decide (labels, pixels) where the configuration does not give them."""
    missing = [n for n in cfg.data.labels if n not in manifest.label_names]
    if missing:
        raise SpectraError(f"label '{missing[0]}' is not in the dataset (it has "
                           f"{manifest.label_names})", file=url, field=missing[0])
    for option in ("validation_column", "train_column", "repeat_column"):
        name = getattr(cfg.data, option)
        if name and name not in manifest.arrow_schema().names:
            raise SpectraError(f"data.{option} '{name}' is not a column of the dataset",
                               file=url, field=name)
    args = card(cfg.model).task.model_args(cfg.model_args, len(cfg.data.labels), manifest.npix)
    if args.get("n_labels") != len(cfg.data.labels):
        raise SpectraError(f"model_args.n_labels = {args['n_labels']} but data.labels lists "
                           f"{len(cfg.data.labels)}", field="model_args.n_labels")
    if "n_pix" in args and args["n_pix"] != manifest.npix:
        raise SpectraError(f"model expects {args['n_pix']} pixels, the dataset grid has "
                           f"{manifest.npix}", file=url, field="model_args.n_pix")
    return args


def _check_rest_frame(cfg: TrainConfig, manifest: Manifest) -> None:
    """Emulators learn rest-frame flux (RV is not one of their inputs; fit mode applies it
    once): refuse training spectra that carry radial velocities."""
    if card(cfg.model).family != "emulator":
        return
    if cfg.data.simulate is not None:
        sim = cfg.data.simulate
        rv = np.concatenate([shard_labels(sim, k)[0][:, INDEX["rv"]]
                             for k in range(sim.n_shards)])
    else:
        rv = np.array([manifest.largest_abs("rv")])
    if rv.size and np.nanmax(np.abs(rv)) > 0:
        raise SpectraError(f"emulators learn rest-frame spectra, and these carry radial "
                           f"velocities up to {np.nanmax(np.abs(rv)):.3g} km/s: observe the "
                           "grid with --rv 0 (or fix the simulation prior's rv at 0)",
                           file=cfg.data.source, field="rv")


def _columns(cfg: TrainConfig, manifest: Manifest) -> list[str]:
    cols = ["flux", "sigma", *cfg.data.labels]
    if manifest.model_flux:
        cols.append(MODEL_FLUX)
    if "logg" in manifest.label_names and "logg" not in cols:
        cols.append("logg")
    for name in (cfg.data.validation_column, cfg.data.train_column, cfg.data.repeat_column):
        if name and name not in cols:
            cols.append(name)
    return cols


@dataclass
class PreparedData:
    """The checked configuration with what the data decided, the datasets and the fitted
    normalisation."""

    cfg: TrainConfig
    manifest: Manifest
    train: Any
    validation: Any
    norm: Normalisation
    flux_sample: np.ndarray | None
    train_rows: int

    @property
    def streamed(self) -> bool:
        """Whether the stored training set streams from storage every epoch (it is larger
        than the object store's share for a run) instead of being held in the store."""
        return self.cfg.data.simulate is None and self.cfg.data.observe is None and \
            not isinstance(self.train, MaterializedDataset)

    @property
    def storage(self) -> str:
        out = self.cfg.output
        return out if "://" in out else os.path.abspath(out)


@dataclass
class PreparedRun(PreparedData):
    """A configured trainer and what the artifact needs afterwards."""

    trainer: TorchTrainer | None = None


def _manifest(cfg: TrainConfig) -> Manifest:
    """What the training data hold: the dataset's manifest, the simulated survey's, or the
    dataset's as observed on the fly."""
    if cfg.data.simulate is not None:
        return survey_manifest(cfg.data.simulate)
    manifest = load_manifest(cfg.data.train, cfg.data.storage_options)
    if cfg.data.observe is not None:
        return observed_manifest(cfg.data.observe, manifest, cfg.data.train)
    return manifest


def _split(cfg: TrainConfig, ds: Any) -> tuple[Any, Any]:
    """(training rows, validation rows or None) of a stored dataset's rows, as the
    configuration chooses them (a separate validation dataset gives None here)."""
    task = {"num_cpus": cfg.data.cpus_per_task}
    if cfg.data.validation:
        if not (cfg.data.train_column or cfg.data.repeat_column):
            return ds, None
        return ds.map_batches(ValidationRows(
            keep=False, fraction=0.0, train_column=cfg.data.train_column,
            repeat_column=cfg.data.repeat_column), **task), None
    split = {"fraction": cfg.data.validation_fraction, "ids": cfg.data.held_out_ids(),
             "column": cfg.data.validation_column, "train_column": cfg.data.train_column,
             "repeat_column": cfg.data.repeat_column}
    return (ds.map_batches(ValidationRows(keep=False, **split), **task),
            ds.map_batches(ValidationRows(keep=True, **split), **task))


def _in_stored_order(ds: Any, ordered: bool = True) -> Any:
    """``ds``, and the datasets made from it, yielding rows in the order of its shards when
    ``ordered``: the noise drawn for them batch after batch from one seeded generator, and
    sums over them, are then the same every run. Used for the validation set (its metrics
    calibrate the catalog's errors) and for the fitted baselines' training rows (measured:
    ridge's teff errors 23 or 28 K from one run to the next without it); gradient-trained
    models shuffle anyway."""
    if ordered:
        ds.context.execution_options.preserve_order = True
    return ds


def _datasets(cfg: TrainConfig, manifest: Manifest) -> tuple[Any, Any]:
    """(training dataset, materialised validation dataset)."""
    so = cfg.data.storage_options
    task = {"num_cpus": cfg.data.cpus_per_task}
    columns = _columns(cfg, manifest)
    fitted = not card(cfg.model).task.gradient_trained
    if cfg.data.simulate is not None:
        sim = cfg.data.simulate
        # lazy: the generator runs again for every epoch
        train_ds = _in_stored_order(simulated_dataset(sim, columns, task), fitted)
        val_rows = max(1, round(cfg.data.validation_fraction * sim.total))
        val_ds = simulated_dataset(sim.model_copy(update={"seed": sim.seed + 1,
                                                          "n_spectra": val_rows}), columns,
                                   task)
    else:
        if cfg.data.observe is not None:  # lazy: observed again (same draws) every epoch
            train_ds = observed_dataset(cfg.data.observe, cfg.data.train, columns, so, task)
        else:
            train_ds = read_spectra(cfg.data.train, columns=columns, storage_options=so,
                                    **task)
        train_ds, val_ds = _split(cfg, _in_stored_order(train_ds, fitted))
        val_rows = manifest.num_rows * cfg.data.validation_fraction
        if cfg.data.observe is None:
            train_ds = _held(train_ds, cfg, manifest, manifest.num_rows)
    if cfg.data.validation:
        validation = load_manifest(cfg.data.validation, so)
        if validation.grid != manifest.grid:
            raise SpectraError("validation grid differs from the training grid",
                               file=cfg.data.validation)
        own = {cfg.data.train_column, cfg.data.repeat_column}  # the training set's columns
        val_ds = read_spectra(cfg.data.validation, columns=[c for c in columns
                                                            if c not in own],
                              storage_options=so, **task)
        val_rows = validation.num_rows
    val_ds = _held(_in_stored_order(val_ds), cfg, manifest, val_rows)
    if val_ds.count() == 0:
        raise SpectraError("no validation rows: none of data.validation_ids is in the "
                           "dataset, data.validation_column is false everywhere, or the "
                           "dataset is too small for validation_fraction",
                           file=cfg.data.source)
    return train_ds, val_ds


#: A dataset is held in the object store for the run (read once) only if it takes at most
#: this share of the store; larger ones stream from storage every epoch.
OBJECT_STORE_SHARE = 0.25


def _pixel_columns(cfg: TrainConfig, manifest: Manifest) -> int:
    """How many float32 per-pixel columns (flux, sigma, model flux) the run reads."""
    return sum(c in FLUX_COLUMNS for c in _columns(cfg, manifest))


def _held(ds: Any, cfg: TrainConfig, manifest: Manifest, rows: float) -> Any:
    """``ds`` materialised in the object store when its ~``rows`` rows fit the share of it
    a run may take; else ``ds`` as it is, streamed (a dataset larger than the store
    would otherwise spill to disk or fail)."""
    size = rows * manifest.npix * (4 * _pixel_columns(cfg, manifest) + 1)  # and a mask
    capacity = ray.cluster_resources().get("object_store_memory", 0.0)
    return ds.materialize() if size <= OBJECT_STORE_SHARE * capacity else ds


def _training_labels(cfg: TrainConfig, train_ds) -> np.ndarray:
    """(N, K) training labels, for the normalisation; a simulated survey's come from its prior
    without running the generator, an observed grid's from the grid without observing it
    (unless a label is one observe draws), a streamed dataset's from its label columns
    alone (not a pass over its flux)."""
    if cfg.data.simulate is not None:
        sim = cfg.data.simulate
        draws = np.concatenate([shard_labels(sim, k)[0] for k in range(sim.n_shards)])
        return draws[:, [INDEX[n] for n in cfg.data.labels]].astype(float)
    if cfg.data.observe is not None or not isinstance(train_ds, MaterializedDataset):
        source = load_manifest(cfg.data.train, cfg.data.storage_options)
        if set(cfg.data.labels) <= set(source.label_names):
            wanted = [c for c in (*cfg.data.labels, cfg.data.validation_column,
                                  cfg.data.train_column, cfg.data.repeat_column) if c]
            train_ds, _ = _split(cfg, read_spectra(
                cfg.data.train, columns=list(dict.fromkeys(wanted)),
                storage_options=cfg.data.storage_options, num_cpus=cfg.data.cpus_per_task))
    table = pa.concat_tables(list(train_ds.select_columns(cfg.data.labels,
                                                          num_cpus=cfg.data.cpus_per_task)
                                  .iter_batches(batch_format="pyarrow")))
    return np.stack([table.column(n).to_numpy(zero_copy_only=False)
                     for n in cfg.data.labels], axis=1).astype(float)


def prepare_data(cfg: TrainConfig) -> PreparedData:
    """Check the data against the configuration, make the datasets, fit the normalisation
    (Ray must run)."""
    manifest = _manifest(cfg)
    cfg = cfg.model_copy(update={"model_args": _check_data(cfg, manifest, cfg.data.source)})
    _check_rest_frame(cfg, manifest)
    task = card(cfg.model).task
    train_ds, val_ds = _datasets(cfg, manifest)
    labels = _training_labels(cfg, train_ds)
    flux_sample = None
    if task.needs_flux_sample:
        col = MODEL_FLUX if manifest.model_flux else "flux"
        source = val_ds if cfg.data.simulate is not None else train_ds  # no extra generation
        flux_sample = next(iter(source.iter_batches(batch_size=512, batch_format="numpy")))[col]
    norm = task.fit_normalisation(labels, cfg.data.labels, flux_sample, cfg.data.transforms)
    norm = norm.model_copy(update={"fill_unusable": True})
    if cfg.preprocess.normalise == "continuum":
        norm = norm.model_copy(update={"continuum": cfg.preprocess.continuum,
                                       "arm_npix": manifest.grid.arm_npix()})
    return PreparedData(cfg, manifest, train_ds, val_ds, norm, flux_sample, len(labels))


def _in_memory(data: PreparedData) -> bool:
    """Whether each worker holds its shard (and rank 0 the validation set) in memory: for
    stored data (a simulated or observed set is drawn anew every epoch) whose per-pixel
    columns fit in ``data.cache_bytes``."""
    cfg = data.cfg
    if cfg.data.simulate is not None or cfg.data.observe is not None:
        return False
    columns = _pixel_columns(cfg, data.manifest)
    held = shard_bytes(data.train_rows, data.manifest.npix, columns, cfg.scaling.num_workers) \
        + shard_bytes(data.validation.count(), data.manifest.npix, columns, 1)
    return held <= cfg.data.cache_bytes


def prepare_run(cfg: TrainConfig, callbacks: tuple = (), resume_from: Checkpoint | None = None
                ) -> PreparedRun:
    """Check the data, fit the normalisation and build the ``TorchTrainer`` (Ray must run).
    ``resume_from``: a checkpoint of another run to continue from (PBT's exploit step); the
    hyperparameters of ``cfg`` then replace the checkpoint's."""
    data = prepare_data(cfg)
    cfg, norm, manifest = data.cfg, data.norm, data.manifest
    task = card(cfg.model).task
    init_state = None
    if cfg.init_from:
        base = load_artifact(cfg.init_from, cfg.data.storage_options)
        init_state = widen_input(base.model.state_dict(), cfg)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"),
                           "norm": norm.model_dump(mode="json"),
                           "grid": manifest.grid.model_dump(mode="json"),
                           "warm_start": task.warm_start(norm, data.flux_sample),
                           "train_rows": data.train_rows, "init_state": init_state,
                           "in_memory": _in_memory(data),
                           "stored": cfg.data.simulate is None and cfg.data.observe is None,
                           "resume_from": resume_from},
        scaling_config=ScalingConfig(num_workers=cfg.scaling.num_workers,
                                     use_gpu=cfg.scaling.use_gpu,
                                     resources_per_worker={"CPU": cfg.scaling.cpus_per_worker}),
        run_config=RunConfig(name=cfg.name, storage_path=data.storage,
                             failure_config=FailureConfig(max_failures=cfg.scaling.max_failures),
                             checkpoint_config=CheckpointConfig(
                                 num_to_keep=cfg.keep_checkpoints,
                                 checkpoint_score_attribute="val_loss",
                                 checkpoint_score_order="min"),
                             callbacks=list(callbacks),
                             logging_config=LoggingConfig(
                                 log_level="INFO" if verbose() else "WARNING")),
        datasets={"train": data.train, "validation": data.validation},
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    return PreparedRun(**vars(data), trainer=trainer)


def _fit_baseline(cfg: TrainConfig, on_epoch: Callable[[str], None] | None) -> TrainResult:
    """The classical baselines: fitted once, evaluated on the validation set like the rest."""
    from .classical import fit_classical

    data = prepare_data(cfg)
    cfg = data.cfg
    task = card(cfg.model).task
    started = time.perf_counter()
    model = fit_classical(cfg, data.norm, data.manifest.grid, data.train, data.storage)
    seconds = time.perf_counter() - started
    batches = data.validation.iter_batches(batch_size=cfg.optim.batch_size,
                                           batch_format="numpy")
    wave = data.manifest.grid.wavelength()
    metrics = {"epoch": 0, "epoch_train_s": seconds,
               "train_spectra_per_s": data.train_rows / max(seconds, 1e-9),
               **task.evaluate(model, data.norm, wave, batches, torch.device("cpu"),
                               torch.Generator().manual_seed(cfg.seed), cfg.loss)}
    if on_epoch is not None:
        on_epoch(epoch_line(metrics, 1, task, cfg.data.labels))
    RunHistory(f"{data.storage}/{cfg.name}", cfg.data.storage_options).record(metrics)
    artifact_url = f"{data.storage.rstrip('/')}/{cfg.name}/artifact"
    calibration = _write_artifact(artifact_url, data, model, metrics)
    return TrainResult(artifact=artifact_url, run_path=f"{data.storage}/{cfg.name}",
                       best_metrics=metrics, epochs=1, history=[metrics],
                       calibration=calibration)


def train(cfg: TrainConfig | dict | str | Path, address: str | None = None,
          on_epoch: Callable[[str], None] | None = None) -> TrainResult:
    """Run the training described by ``cfg`` (a TrainConfig, its dict or a YAML path),
    resuming if its output already holds a run, and write the artifact of the best epoch
    under ``<output>/<name>/artifact``. ``on_epoch`` gets a progress line per epoch."""
    cfg = load_config(TrainConfig, cfg)
    init_ray(address)
    if not card(cfg.model).task.gradient_trained:
        return _fit_baseline(cfg, on_epoch)
    reports = report_queue()
    run = prepare_run(cfg, callbacks=(ForwardReports(reports),))
    cfg = run.cfg
    task = card(cfg.model).task

    if on_epoch is not None and run.streamed:
        on_epoch("the training set streams from storage every epoch (it is larger than "
                 f"{OBJECT_STORE_SHARE:.0%} of the object store)")

    def show(metrics: dict[str, Any], _checkpoint: Any) -> None:
        if on_epoch is not None:
            on_epoch(epoch_line(metrics, cfg.optim.epochs, task, cfg.data.labels))

    result = fit_reporting(run.trainer, reports, show,
                           RunHistory(f"{run.storage}/{cfg.name}", cfg.data.storage_options))
    best, metrics = _best(result)
    with best.as_directory() as d:
        state = torch.load(os.path.join(d, CHECKPOINT_FILE), weights_only=True)
    model = build(cfg.model, **cfg.model_args)
    model.load_state_dict(state["model"])
    artifact_url = f"{run.storage.rstrip('/')}/{cfg.name}/artifact"
    calibration = _write_artifact(artifact_url, run, model, metrics)
    history = sorted((m for _, m in result.best_checkpoints or []), key=lambda m: m["epoch"])
    return TrainResult(artifact=artifact_url, run_path=f"{run.storage}/{cfg.name}",
                       best_metrics=metrics, epochs=int(result.metrics.get("epoch", -1)) + 1,
                       history=history, calibration=calibration)


def _write_artifact(url: str, run: PreparedData, model: torch.nn.Module,
                    metrics: dict[str, Any]) -> str:
    """The artifact of the best epoch: its metadata, with label units from the dataset's
    manifest (else the shared defaults), reference inputs, and for models that estimate
    labels the input-novelty reference and the uncertainties' calibration, from the
    validation set. Returns the calibration's summary ('' if none)."""
    cfg, m = run.cfg, run.manifest
    units = {lab.name: lab.unit or default_unit(lab.name) for lab in m.labels}
    task = card(cfg.model).task
    emulates = "fit" in task.modes  # emulators' fits judge their inputs by χ² instead
    val_batch = next(iter(run.validation.iter_batches(
        batch_size=8 if emulates else VALIDATION_CHECK_SPECTRA, batch_format="numpy")))
    wave = m.grid.wavelength()
    first = {k: v[:8] for k, v in val_batch.items()}
    reference = task.reference_inputs(run.norm, wave, first)
    novelty, calibration = None, None
    if not emulates:
        novelty = _novelty(run.norm, wave, val_batch, cfg.seed)
        calibration = check_uncertainties(cfg.calibration, task, model, run.norm, wave,
                                          val_batch, cfg.seed)
    metadata = describe(model=cfg.model, model_args=cfg.model_args, normalisation=run.norm,
                        grid=m.grid, units=units, flux_unit=m.flux_unit,
                        noise_alpha=cfg.data.noise_alpha if m.model_flux else 0.0,
                        metrics=metrics, config=cfg.model_dump(mode="json"),
                        training_data=cfg.data.source, resolution=m.resolution,
                        calibration=calibration)
    write_artifact(url, model=model, metadata=metadata, reference_inputs=reference,
                   novelty=novelty, storage_options=cfg.data.storage_options)
    return "" if calibration is None else calibration_text(calibration, units)


def _novelty(norm: Normalisation, wave: np.ndarray, batch: dict[str, np.ndarray], seed: int
             ) -> InputNovelty | None:
    """The input-novelty reference from validation spectra as the model takes them (None
    when they are too few or carry no noise to measure against)."""
    sigma = torch.as_tensor(np.asarray(batch["sigma"], dtype=np.float32))
    if len(sigma) < MIN_NOVELTY_SPECTRA or not bool(((sigma > 0) & torch.isfinite(sigma))
                                                    .any(dim=1).all()):
        return None
    flux, sigma = norm.model_input(wave, torch.as_tensor(np.asarray(batch["flux"],
                                                                    dtype=np.float32)), sigma)
    return InputNovelty.fit(flux, sigma, seed)


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
