"""What a model family means to the rest of stellar-ray, in one object per family.

A :class:`Task` turns a batch of dataset columns into model inputs and targets, gives the
loss, fits the normalisation, decodes outputs into physical units, evaluates a validation
set, makes the artifact's reference inputs and says what inference does with the model.
Training and inference call the task of the model's card and never ask for a family or a
model by name. Batches are dicts of numpy columns (``flux``, ``sigma`` (B, L), labels (B,)
and, for simulated or observed-from-grid data, the noiseless ``model_flux``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from ..normalisation import Normalisation, Transform

Family = Literal["emulator", "regressor", "posterior", "classical", "hml"]
InferenceMode = Literal["predict", "fit", "gp"]
Inputs = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Task:
    """Base of the tasks; subclasses fill in the family's behaviour. Instances are frozen and
    configured per model card (e.g. an emulator's flux target)."""

    family: ClassVar[Family]
    #: inference modes this family supports, the default first
    modes: ClassVar[tuple[InferenceMode, ...]]
    #: trained by gradient descent in the Ray Train loop
    gradient_trained: ClassVar[bool] = True
    #: what the model takes and gives, for the artifact's metadata
    takes: ClassVar[str]
    gives: ClassVar[str]
    #: what is done to flux before the model: regressors divide by the median (inside the
    #: model); emulators give flux in the dataset's unit
    flux_normalise: ClassVar[Literal["none", "median"]] = "median"
    #: the top-level modules that fine-tuning with a frozen encoder trains (None: the
    #: family has no encoder to freeze)
    head: ClassVar[tuple[str, ...] | None] = None
    #: fit mode may step a little beyond the training domain (False: the model is flat
    #: there, e.g. an interpolator clamped to its grid, so fits stay inside)
    extrapolates: ClassVar[bool] = True

    # -- shapes -----------------------------------------------------------------------
    def model_args(self, given: dict[str, Any], n_labels: int, n_pix: int) -> dict[str, Any]:
        """Model arguments with what the data decide filled in where not given."""
        args = dict(given)
        args.setdefault("n_labels", n_labels)
        args.setdefault("n_pix", n_pix)
        return args

    # -- normalisation and start ------------------------------------------------------
    def fit_normalisation(self, labels: np.ndarray, names: list[str],
                          flux_sample: np.ndarray | None,
                          transforms: dict[str, Transform] | None = None) -> Normalisation:
        """From training labels (N, K), their transforms and, where the task needs it,
        flux (n, L)."""
        return Normalisation.of_labels(labels, names, transforms)

    @property
    def needs_flux_sample(self) -> bool:
        """Whether :meth:`fit_normalisation` wants a sample of training flux."""
        return False

    def warm_start(self, norm: Normalisation, flux_sample: np.ndarray | None
                   ) -> list[float] | None:
        """What a fresh model is initialised from before training, as JSON (None: nothing)."""
        return None

    def init_model(self, model: torch.nn.Module, warm: list[float] | None) -> None:
        """Apply :meth:`warm_start`'s result to a freshly built model."""

    # -- training ---------------------------------------------------------------------
    def prepare(self, batch: dict[str, np.ndarray], norm: Normalisation, wave: np.ndarray, *,
                noise_alpha: float, train: bool, generator: torch.Generator
                ) -> tuple[Inputs, torch.Tensor]:
        """(model inputs, target) for one batch; ``wave`` (L,) Å is the dataset's grid."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, inputs: Inputs, target: torch.Tensor,
             kind: str) -> torch.Tensor:
        """The training objective for one batch; ``kind`` is 'mse' or 'l1'."""
        raise NotImplementedError

    # -- validation -------------------------------------------------------------------
    def outputs(self, model: torch.nn.Module, inputs: Inputs, target: torch.Tensor,
                batch: dict[str, np.ndarray], norm: Normalisation,
                generator: torch.Generator) -> dict[str, np.ndarray]:
        """What :meth:`metrics` needs from one validation batch, in physical units."""
        raise NotImplementedError

    def metrics(self, parts: dict[str, np.ndarray], norm: Normalisation) -> dict[str, float]:
        """Validation metrics from the concatenated :meth:`outputs`."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, norm: Normalisation, wave: np.ndarray,
                 batches: Iterable[dict[str, np.ndarray]], device: torch.device,
                 generator: torch.Generator, loss_kind: str) -> dict[str, float]:
        """Validation loss and the family's metrics over ``batches`` (model in eval mode)."""
        model.eval()
        losses: list[float] = []
        parts: dict[str, list[np.ndarray]] = {}
        with torch.no_grad():
            for batch in batches:
                inputs, target = self.prepare(batch, norm, wave, noise_alpha=0.0, train=False,
                                              generator=generator)
                inputs = tuple(x.to(device) for x in inputs)
                target = target.to(device)
                losses.append(float(self.loss(model, inputs, target, loss_kind)))
                for key, value in self.outputs(model, inputs, target, batch, norm,
                                               generator).items():
                    parts.setdefault(key, []).append(value)
        joined = {k: np.concatenate(v, axis=_stack_axis(k)) for k, v in parts.items()}
        return {"val_loss": float(np.mean(losses)), **self.metrics(joined, norm)}

    def headline(self, metrics: dict[str, Any], labels: Sequence[str]) -> dict[str, float]:
        """The few metrics a progress line shows for an epoch."""
        return {}

    # -- the artifact -----------------------------------------------------------------
    def reference_inputs(self, norm: Normalisation, wave: np.ndarray,
                         batch: dict[str, np.ndarray], n: int = 4) -> dict[str, torch.Tensor]:
        """A few inputs from a validation batch, in model space."""
        raise NotImplementedError

    def run_reference(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]
                      ) -> dict[str, torch.Tensor]:
        """The model's deterministic outputs for :meth:`reference_inputs`."""
        raise NotImplementedError

    # -- inference --------------------------------------------------------------------
    def predict(self, model: torch.nn.Module, norm: Normalisation, flux: torch.Tensor,
                sigma: torch.Tensor, *, samples: int, quantiles: Sequence[float],
                noise_redraws: int, generator: torch.Generator
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Estimates (B, K) in physical units and further catalog columns (``<label>_err``,
        quantiles) for flux and sigma (B, L)."""
        raise NotImplementedError(f"a {self.family} does not predict labels")

    def emulate(self, model: torch.nn.Module, norm: Normalisation, z: torch.Tensor,
                wave: torch.Tensor) -> torch.Tensor:
        """Rest-frame flux (N, L) in the dataset's unit for z-scored labels (N, K) at
        wavelengths ``wave`` (L,) Å."""
        raise NotImplementedError(f"a {self.family} does not emulate spectra")


def _stack_axis(key: str) -> int:
    """Posterior draws are (S, B, K): they join along the spectra."""
    return 1 if key == "samples" else 0
