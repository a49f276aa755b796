"""The typed inference configuration (YAML-loadable)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config_files import load_config
from ..spectra.velocity import VelocitySettings


class ActorSettings(BaseModel):
    """The model's actor pool: on a cluster one GPU per actor; here fractions of a CPU."""

    model_config = ConfigDict(extra="forbid")

    min_actors: int = Field(default=1, gt=0)
    max_actors: int = Field(default=2, gt=0, description="the pool autoscales up to this")
    cpus_per_actor: float = Field(default=0.5, gt=0, description="a fraction on small nodes, "
                                  "so that read tasks still find a CPU")
    gpus_per_actor: float = Field(default=0.0, ge=0)
    threads_per_actor: int | None = Field(
        default=None, gt=0, description="torch threads in each actor (default: the fastest "
        "measured count up to the CPUs it holds, ≥ 1; see stellar-ray threads)")
    batch_size: int = Field(default=64, gt=0, description="spectra per model call")

    @model_validator(mode="after")
    def _bounds(self) -> ActorSettings:
        if self.max_actors < self.min_actors:
            raise ValueError("actors.max_actors must be at least actors.min_actors")
        return self


class FitSettings(BaseModel):
    """Emulator fitting (paper 002 §3.5): batched Adam from several starts, then
    Levenberg–Marquardt, over the labels plus radial velocity, extra broadening and a
    continuum polynomial per arm."""

    model_config = ConfigDict(extra="forbid")

    restarts: int = Field(default=4, gt=0)
    steps: int = Field(default=200, gt=0, description="Adam steps per start")
    lr: float = Field(default=0.05, gt=0, description="Adam step size in z-scored labels")
    polish_steps: int = Field(default=5, ge=0, description="Levenberg–Marquardt steps "
                              "after Adam (0: none)")
    rv_range_kms: float = Field(default=300.0, gt=0, description="starting RVs are drawn "
                                "within ± this")
    fit_broadening: bool = Field(default=True, description="also fit a Gaussian broadening "
                                 "(km/s) on top of the emulator's")
    continuum_degree: int | None = Field(default=None, ge=0, description="also fit a "
                                         "multiplicative continuum per arm: a Legendre "
                                         "polynomial of this degree (0: a flux scale per "
                                         "arm; none: the emulator's continuum as it is)")


class GPSettings(BaseModel):
    """Gaussian-process minimisation of the RMS residual (paper 001 §4, HML generators):
    ``n_random`` random label tuples seed the surrogate, ``n_guided`` more follow it
    (the paper's counts), then ``polish_steps`` Levenberg–Marquardt steps refine the
    minimum. The acquisition settings trade a little of the GP's optimum for a tenth of
    gp_minimize's default cost (see the README)."""

    model_config = ConfigDict(extra="forbid")

    n_random: int = Field(default=100, gt=1, description="random evaluations (one shared "
                          "seeded design per actor)")
    n_guided: int = Field(default=20, gt=0, description="evaluations chosen by the GP")
    acq_func: Literal["EI", "PI", "LCB", "gp_hedge"] = "EI"
    acq_optimizer: Literal["sampling", "lbfgs"] = "sampling"
    n_points: int = Field(default=1000, gt=0, description="acquisition samples per step")
    gp_restarts: int = Field(default=0, ge=0, description="restarts of the GP's kernel "
                             "fit per step")
    polish_steps: int = Field(default=5, ge=0, description="Levenberg–Marquardt steps "
                              "from the GP's minimum (0: the paper's estimate as it is; 5 "
                              "halve its log g error at no measurable cost)")


class QualitySettings(BaseModel):
    """Thresholds of the per-spectrum quality flags."""

    model_config = ConfigDict(extra="forbid")

    min_snr: float = Field(default=10.0, ge=0)
    max_bad_fraction: float = Field(default=0.2, ge=0, le=1, description="largest share of "
                                    "unusable pixels before a spectrum is flagged")
    max_chi2_reduced: float = Field(default=5.0, gt=0, description="fit mode: largest "
                                    "reduced χ² of the best fit before a spectrum is flagged "
                                    "as poorly fitted (out of the emulator's distribution)")


class RVSettings(VelocitySettings):
    """Radial velocities measured by cross-correlation (:mod:`stellar_ray.spectra.velocity`)
    and the spectra shifted to rest before the model sees them."""

    measure: bool = Field(default=False, description="measure each spectrum's RV and "
                          "shift it to rest (rv, rv_err, rv_ccf in the catalog)")
    templates: str | None = Field(default=None, description="URL of an emulator artifact "
                                  "or of a rest-frame dataset; default: the model itself "
                                  "when it emulates")
    n_templates: int = Field(default=16, gt=0, description="template spectra: emulated at "
                             "this many labels spread over the emulator's domain, or the "
                             "first this many rows of a template dataset")


class CatalogJobConfig(BaseModel):
    """What every job that turns a dataset into a catalog shares: the data, the catalog,
    the actor pool and the per-spectrum quality flags."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    data: str = Field(description="URL of a spectrum dataset")
    to: str = Field(description="URL of the catalog to write (or to resume)")
    carry_columns: list[str] = Field(default_factory=list, description="input columns "
                                     "copied into the catalog as input_<name>")
    actors: ActorSettings = Field(default_factory=ActorSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    actor_env: dict[str, str] = Field(default_factory=dict, description="environment "
                                      "variables set in every actor")
    read_cpus: float = Field(default=0.5, gt=0, description="CPUs per read task")
    verify: bool = Field(default=True, description="check each input shard's SHA-256")
    storage_options: dict[str, Any] | None = None
    seed: int = 0

    @classmethod
    def from_yaml(cls, path: str | Path):
        return load_config(cls, path)


class InferConfig(CatalogJobConfig):
    """``stellar-ray infer``: which model over which spectra into which catalog."""

    model: str = Field(description="URL of a model artifact (``stellar-ray train`` output)")
    mode: Literal["auto", "predict", "fit", "gp"] = Field(
        default="auto", description="predict: regressors and the cINN; fit: emulators, "
        "fitted to each spectrum; gp: HML generators, Gaussian-process minimisation; "
        "auto: by the model's family")
    samples: int = Field(default=256, gt=1, description="cINN posterior draws per spectrum")
    quantiles: list[float] = Field(default=[0.16, 0.5, 0.84])
    noise_redraws: int = Field(default=16, ge=0, description="point regressors: the "
                               "uncertainty is the spread over this many noise re-draws "
                               "(paper 003 §3.7); 0: none")
    recalibrate: bool = Field(default=True, description="widen the uncertainties by the "
                              "artifact's error model where training found them "
                              "miscalibrated (metadata.calibration)")
    fit: FitSettings = Field(default_factory=FitSettings)
    gp: GPSettings = Field(default_factory=GPSettings)
    rv: RVSettings = Field(default_factory=RVSettings)
    gpu_precision: Literal["fp32", "tf32"] = Field(
        default="tf32", description="on GPUs: fp32, or tf32 matrix multiplies and "
        "convolutions (Ampere and newer; 10-bit mantissa inputs, fp32 sums). CPUs: fp32")

    @model_validator(mode="after")
    def _quantiles(self) -> InferConfig:
        if any(not 0 < q < 1 for q in self.quantiles):
            raise ValueError("quantiles must lie strictly between 0 and 1")
        return self


class RVConfig(CatalogJobConfig):
    """``stellar-ray rv``: radial velocities of a dataset's spectra into a catalog."""

    rv: RVSettings = Field(description="rv.templates is required here")

    @model_validator(mode="after")
    def _templates(self) -> RVConfig:
        if not self.rv.templates:
            raise ValueError("rv.templates: give the URL of an emulator artifact or of a "
                             "rest-frame dataset")
        return self
