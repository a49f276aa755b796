"""The typed training configuration (YAML-loadable)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config_files import load_config
from ..models.normalisation import Transform
from ..models.registry import CARDS, card
from ..simulation.observe import ObserveConfig
from ..simulation.survey import SimulationConfig
from ..spectra.continuum import ContinuumConfig


class DataConfig(BaseModel):
    """Where spectra come from: a training dataset URL, or a simulated survey generated on the
    fly every epoch (``simulate``); and a validation dataset URL, or else a fraction of the
    training set (chosen by a hash of spectrum_id, so it is stable across runs) or, for a
    simulated survey, that fraction as many spectra simulated once with the next seed."""

    model_config = ConfigDict(extra="forbid")

    train: str | None = None
    simulate: SimulationConfig | None = Field(default=None, description="a survey the "
                                              "generator makes anew for every epoch")
    observe: ObserveConfig | None = Field(default=None, description="observe the 'train' "
                                          "dataset (a noiseless grid) through this "
                                          "instrument on the fly, as stellar-ray observe")
    validation: str | None = None
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)
    validation_ids: list[str] | str | None = Field(default=None, description="the ids held "
                                                   "out for validation: a list, or the URL "
                                                   "of a text file with one id per line")
    validation_column: str | None = Field(default=None, description="a boolean column of "
                                          "the dataset, true for validation rows")
    train_column: str | None = Field(default=None, description="a boolean column, true for "
                                     "training rows (else every row not in validation "
                                     "trains); rows in neither are left out (a test set)")
    repeat_column: str | None = Field(default=None, description="an integer column: each "
                                      "training row appears that many times per epoch "
                                      "(stellar-ray library --augment's copies)")
    labels: list[str] = Field(min_length=1, description="label columns the model predicts "
                              "(regressors, cINN) or takes (emulators)")
    transforms: dict[str, Transform] = Field(default_factory=dict, description="label: "
                                             "log10 or ln, applied before z-scoring in "
                                             "training and undone in every output")
    noise_alpha: float = Field(default=1.0, ge=0, description="α of x + α ε σ, fresh each "
                               "epoch, when the dataset keeps noiseless model flux")
    storage_options: dict[str, Any] | None = None
    cpus_per_task: float = Field(default=0.5, gt=0, description="CPUs each read or "
                                 "generation task holds: a fraction lets data tasks run "
                                 "beside training workers and sweep trials on a small node")
    cache_bytes: int = Field(default=4 * 2**30, ge=0, description="a stored dataset whose "
                             "flux columns take at most this many bytes per worker is read "
                             "once into the worker's memory and shuffled there every epoch; "
                             "0 streams it from storage every epoch")

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.train is None) == (self.simulate is None):
            raise ValueError("data: give exactly one of 'train' (a dataset URL) and "
                             "'simulate' (a survey generated on the fly)")
        if self.observe is not None and self.train is None:
            raise ValueError("data.observe needs data.train: the noiseless grid to observe")
        unknown = sorted(set(self.transforms) - set(self.labels))
        if unknown:
            raise ValueError(f"data.transforms: '{unknown[0]}' is not one of data.labels "
                             f"{self.labels}")
        chosen = [n for n in ("validation", "validation_ids", "validation_column")
                  if getattr(self, n) is not None]
        if len(chosen) > 1:
            raise ValueError(f"data: give at most one of {chosen} (else validation_fraction)")
        if self.simulate is not None and (self.train_column or self.repeat_column):
            raise ValueError("data.train_column and data.repeat_column are columns of a "
                             "stored dataset, not of a simulated survey")
        if self.simulate is not None and chosen and chosen[0] != "validation":
            raise ValueError(f"data.{chosen[0]}: a simulated survey validates on spectra "
                             "simulated with the next seed; give validation_fraction")
        return self

    def held_out_ids(self) -> frozenset[str] | None:
        """The validation ids, read from their file if given as a URL."""
        if self.validation_ids is None:
            return None
        if isinstance(self.validation_ids, list):
            return frozenset(map(str, self.validation_ids))
        from ..spectra.storage import read_bytes, resolve

        fs, path = resolve(self.validation_ids, self.storage_options)
        text = read_bytes(fs, path).decode()
        return frozenset(line.strip() for line in text.splitlines() if line.strip())

    @property
    def source(self) -> str:
        """The training data, for messages."""
        return self.train or f"simulated {self.simulate.instrument_config().mode} survey"


AUTO_VALIDATION_SPECTRA = 20_000
"""``validate_every: auto`` validates once per this many training spectra (at least every
epoch): a small epoch takes less time than validating, checkpointing and reporting it."""


class OptimConfig(BaseModel):
    """AdamW with linear warm-up and cosine decay; gradient clipping."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=10, gt=0)
    validate_every: int | Literal["auto"] = Field(
        default="auto", description="epochs between validations (each with a checkpoint and "
        "a report); auto: every epoch from 20,000 training spectra, else every "
        "ceil(20,000 / N) epochs. The last epoch always validates")
    batch_size: int = Field(default=64, gt=0)
    lr: float = Field(default=3e-4, gt=0)
    min_lr: float = Field(default=1e-5, ge=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)
    grad_clip: float = Field(default=0.5, gt=0)
    loss: Literal["mse", "l1"] | None = None  # None: the paper's choice for the family
    bf16: bool = Field(default=True, description="bf16 autocast when training on GPUs")
    schedule: Literal["cosine", "plateau"] = Field(
        default="cosine", description="cosine: warm-up then cosine decay (papers 002, 003); "
        "plateau: SM-Net's coupled decay of learning rate and batch size (paper 000)")
    plateau_factor: float = Field(default=0.8, gt=0, lt=1)
    plateau_patience: int = Field(default=3, gt=0, description="epochs without improvement")
    min_batch_size: int = Field(default=1, gt=0, description="the plateau schedule never "
                                "shrinks the batch below this")
    early_stop_patience: int | None = Field(default=None, gt=0, description="stop after this "
                                            "many epochs without improvement")

    @field_validator("validate_every")
    @classmethod
    def _positive_interval(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("validate_every must be at least 1 (or auto)")
        return value

    def validation_interval(self, train_rows: int) -> int:
        """Epochs between validations for a training set of ``train_rows`` spectra."""
        if self.validate_every != "auto":
            return int(self.validate_every)
        return max(1, math.ceil(AUTO_VALIDATION_SPECTRA / max(train_rows, 1)))

    def validates(self, epoch: int, train_rows: int) -> bool:
        """Whether epoch ``epoch`` (from 0) ends with a validation."""
        return (epoch + 1) % self.validation_interval(train_rows) == 0 \
            or epoch == self.epochs - 1


class PreprocessConfig(BaseModel):
    """What is done to flux before a regressor sees it, recorded in the artifact and done
    the same way at inference: ``median`` (the model divides by the median), or
    ``continuum`` (flux and σ divided by a pseudo-continuum per arm first)."""

    model_config = ConfigDict(extra="forbid")

    normalise: Literal["median", "continuum"] = "median"
    continuum: ContinuumConfig = Field(default_factory=ContinuumConfig)


class CalibrationConfig(BaseModel):
    """The uncertainties checked on the validation set once training is done (coverage of
    the 68 % and 95 % intervals at the inference defaults) and, where they miss, widened by
    a post-hoc error model stored in the artifact and applied at inference."""

    model_config = ConfigDict(extra="forbid")

    recalibrate: Literal["auto", "always", "never"] = Field(
        default="auto", description="auto: when a label's coverage misses its level by "
        "more than tolerance")
    tolerance: float = Field(default=0.02, gt=0, lt=1, description="coverage points")
    min_spectra: int = Field(default=50, gt=1, description="fewer validation spectra with "
                             "truths than this: only measured, never recalibrated")


class ScalingSettings(BaseModel):
    """Data-parallel workers: GPUs on a cluster, CPU workers here."""

    model_config = ConfigDict(extra="forbid")

    num_workers: int = Field(default=1, gt=0)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0)
    max_failures: int = Field(default=0, ge=-1)


class TrainConfig(BaseModel):
    """A training run."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    model_args: dict[str, Any] = Field(default_factory=dict, description="keywords for "
                                       "stellar_ray.models.build (sizes, labels, pixels)")
    data: DataConfig
    optim: OptimConfig = Field(default_factory=OptimConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    scaling: ScalingSettings = Field(default_factory=ScalingSettings)
    output: str = Field(description="storage path of the run (checkpoints) and its artifact")
    name: str = "stellar-ray-train"
    seed: int = 0
    keep_checkpoints: int = Field(default=3, gt=0, description="best checkpoints kept")
    worker_env: dict[str, str] = Field(default_factory=dict, description="environment "
                                       "variables set in every training worker")
    init_from: str | None = Field(default=None, description="artifact to fine-tune from")
    freeze_encoder: bool = Field(default=False, description="fine-tuning: train only the "
                                 "head (a regressor's linear head, the cINN's flow) and keep "
                                 "init_from's encoder fixed")

    @model_validator(mode="before")
    @classmethod
    def _paper_optimiser(cls, values: Any) -> Any:
        """The model's paper settings (its card's) under the configured optim."""
        if isinstance(values, dict) and isinstance(values.get("model"), str):
            known = CARDS.get(values["model"])
            optim = values.get("optim") or {}
            if known is not None and known.optim and isinstance(optim, dict):
                values = {**values, "optim": {**known.optim, **optim}}
        return values

    @model_validator(mode="after")
    def _known_model(self) -> TrainConfig:
        model = card(self.model)  # raises with the list of names
        if model.family == "hml":
            raise ValueError("model 'hml' is built from a grid, not trained: run stellar-ray "
                             "hml clone GRID --to CLONES, then stellar-ray hml build CLONES "
                             "--to ARTIFACT")
        if self.preprocess.normalise == "continuum" and model.task.flux_normalise == "none":
            raise ValueError(f"preprocess.normalise: continuum is for models that take "
                             f"spectra; a {model.family} ('{self.model}') gives them (fit "
                             "mode fits the continuum instead)")
        if self.freeze_encoder:
            if self.init_from is None:
                raise ValueError("freeze_encoder fine-tunes a trained model: give init_from")
            if model.task.head is None or not model.task.gradient_trained:
                raise ValueError(f"freeze_encoder: a {model.family} model ('{self.model}') "
                                 "has no encoder to freeze")
        return self

    @property
    def loss(self) -> str:
        """The configured loss, else the paper's for this model."""
        return self.optim.loss or card(self.model).loss

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        return load_config(cls, path)
