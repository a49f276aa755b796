"""Regressors, spectrum → labels (paper 003): flux in, z-scored labels out.

Training inputs get fresh noise α ε σ on the noiseless model flux whenever the dataset keeps
it (paper 003 eq. 15); validation and inference take the stored (observed) flux. Unusable
pixels hold flux 0 and σ = +inf in the data; the normalisation fills them from their
neighbours before the model (both in training and inference). In inference the uncertainty
of a point estimate is the spread of the predictions for ``noise_redraws`` noisy copies of
the spectrum (§3.7).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ...spectra.schema import MODEL_FLUX
from ..metrics import regression_metrics
from ..normalisation import Normalisation, labels_of
from ..preprocess import inject_noise
from .base import Inputs, Task


def training_flux(batch: dict[str, np.ndarray], noise_alpha: float, train: bool,
                  generator: torch.Generator) -> torch.Tensor:
    """(B, L) model input: model flux with fresh noise in training where the batch has it,
    else the stored flux."""
    sigma = torch.as_tensor(batch["sigma"], dtype=torch.float32)
    if train and MODEL_FLUX in batch and noise_alpha > 0:
        clean = torch.as_tensor(batch[MODEL_FLUX], dtype=torch.float32)
        return torch.where(torch.isfinite(sigma), inject_noise(clean, sigma, noise_alpha,
                                                               generator),
                           torch.zeros_like(clean))
    return torch.as_tensor(batch["flux"], dtype=torch.float32)


def masked_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean L1 or squared error over the known (finite) targets."""
    known = torch.isfinite(target)
    diff = torch.where(known, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    per = diff.abs() if kind == "l1" else diff**2
    return per.sum() / known.sum().clamp(min=1)


@dataclass(frozen=True)
class RegressorTask(Task):
    """Point estimates of the labels."""

    family = "regressor"
    modes = ("predict",)
    head = ("head",)
    takes = "flux (B, L) on the artifact's grid, unusable pixels filled from neighbours"
    gives = "labels (B, K) z-scored with normalisation.mean/std"

    def prepare(self, batch: dict[str, np.ndarray], norm: Normalisation, wave: np.ndarray, *,
                noise_alpha: float, train: bool, generator: torch.Generator
                ) -> tuple[Inputs, torch.Tensor]:
        flux = training_flux(batch, noise_alpha, train, generator)
        sigma = torch.as_tensor(batch["sigma"], dtype=torch.float32)
        flux, _ = norm.model_input(wave, flux, sigma)
        return (flux,), norm.z(labels_of(batch, norm.labels))

    def loss(self, model: torch.nn.Module, inputs: Inputs, target: torch.Tensor,
             kind: str) -> torch.Tensor:
        return masked_loss(model(*inputs), target, kind)

    def outputs(self, model: torch.nn.Module, inputs: Inputs, target: torch.Tensor,
                batch: dict[str, np.ndarray], norm: Normalisation,
                generator: torch.Generator) -> dict[str, np.ndarray]:
        out = {"pred": norm.unz(model(*inputs).cpu().numpy()),
               "true": labels_of(batch, norm.labels)}
        if "logg" in batch:
            out["logg"] = np.asarray(batch["logg"], dtype=float)
        return out

    def metrics(self, parts: dict[str, np.ndarray], norm: Normalisation) -> dict[str, float]:
        return regression_metrics(parts["pred"], parts["true"], norm.labels, parts.get("logg"))

    def headline(self, metrics: dict[str, Any], labels: Sequence[str]) -> dict[str, float]:
        return {f"{name} MAE": metrics[f"{name}/mae"] for name in labels
                if f"{name}/mae" in metrics}

    def reference_inputs(self, norm: Normalisation, wave: np.ndarray,
                         batch: dict[str, np.ndarray], n: int = 4) -> dict[str, torch.Tensor]:
        z = norm.z(labels_of(batch, norm.labels))[:n]
        return {"labels_z": torch.nan_to_num(z),
                "flux": torch.tensor(np.array(batch["flux"][:n]), dtype=torch.float32)}

    def run_reference(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]
                      ) -> dict[str, torch.Tensor]:
        model.eval()
        with torch.no_grad():
            return {"labels_z": model(inputs["flux"])}

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, norm: Normalisation, flux: torch.Tensor,
                sigma: torch.Tensor, *, samples: int, quantiles: Sequence[float],
                noise_redraws: int, generator: torch.Generator
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        labels = norm.unz(model(flux).cpu())
        if noise_redraws > 0:
            draws = torch.stack([model(inject_noise(flux, sigma, 1.0, generator))
                                 for _ in range(noise_redraws)])
            err = norm.unz(draws.cpu()).std(axis=0, ddof=1)
        else:
            err = np.full_like(labels, np.nan)
        return labels, {f"{name}_err": err[:, k] for k, name in enumerate(norm.labels)}


@dataclass(frozen=True)
class ClassicalTask(RegressorTask):
    """Classical baselines (ridge, gradient-boosted trees): the regressors' inputs, targets
    and inference, fitted rather than trained by gradient descent; ``fitting`` says how
    (:mod:`stellar_ray.training.classical`)."""

    fitting: Literal["normal_equations", "lightgbm"] = "normal_equations"

    family = "classical"
    gradient_trained = False
