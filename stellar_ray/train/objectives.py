"""Turning a batch of spectra into model inputs and targets, and the loss, per family.

Emulators: z-scored labels -> flux divided by ``flux_scale`` (SM-Net: log1p-scaled, masked
MSE; TransformerPayne: a random subset of wavelengths per step). Regressors and the cINN:
flux -> z-scored labels; when the dataset keeps the noiseless model flux, training inputs
get fresh noise α ε σ every time (paper 003 eq. 15), validation uses the stored noisy flux.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..models.preprocess import LabelScaler, inject_noise
from ..models.smnet import Log1pFluxScaler, masked_weighted_mse
from ..models.transformer_payne import random_wavelength_subset
from ..spectra.schema import MODEL_FLUX

#: Wavelengths per spectrum and step when training TransformerPayne (paper 002: 8192).
TRANSFORMER_PAYNE_SUBSET = 1024


@dataclass
class Normalisation:
    """Everything that maps data to model space and back; stored in the artifact.

    labels: names (K); mean, std: z-scoring (K); low, high: the training domain (K);
    flux_scale: emulator targets are flux / flux_scale; log1p: SM-Net's (scale, maximum)."""

    labels: list[str]
    mean: list[float]
    std: list[float]
    low: list[float]
    high: list[float]
    flux_scale: float = 1.0
    log1p: tuple[float, float] | None = None
    wavelength: list[float] | None = None  # Å, for TransformerPayne queries

    def to_dict(self) -> dict:
        return asdict(self)

    def scaler(self) -> LabelScaler:
        """The z-scoring as the zoo's module (float32 buffers: it can go into a model)."""
        return LabelScaler(torch.as_tensor(self.mean), torch.as_tensor(self.std))

    def z(self, labels: np.ndarray) -> torch.Tensor:
        """(B, K) labels -> z-scores, float32."""
        return self.scaler()(torch.as_tensor(np.asarray(labels, dtype=np.float64)).float())

    def unz(self, z: torch.Tensor | np.ndarray) -> np.ndarray:
        """z-scores (..., K) -> labels, float64."""
        z = torch.as_tensor(np.asarray(z, dtype=np.float32))
        return self.scaler().inverse(z).double().numpy()


def labels_of(batch: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """(B, K) float64 labels from a numpy batch."""
    return np.stack([np.asarray(batch[n], dtype=np.float64) for n in names], axis=1)


def prepare(batch: dict[str, np.ndarray], family: str, model_name: str, norm: Normalisation,
            noise_alpha: float, train: bool, generator: torch.Generator
            ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """(model inputs, target) for one numpy batch."""
    z = norm.z(labels_of(batch, norm.labels))
    if family == "emulator":
        flux = torch.as_tensor(batch[MODEL_FLUX] if MODEL_FLUX in batch else batch["flux"],
                               dtype=torch.float32)
        if model_name == "smnet":
            scaler = Log1pFluxScaler(*norm.log1p)
            return (z,), scaler(flux)
        target = flux / norm.flux_scale
        if model_name == "transformer_payne" and train:
            grid = torch.as_tensor(norm.wavelength, dtype=torch.float32)
            idx, wave = random_wavelength_subset(
                grid, target.shape[0], min(TRANSFORMER_PAYNE_SUBSET, grid.numel()), generator)
            return (z, wave), target.gather(1, idx)
        return (z,), target
    sigma = torch.as_tensor(batch["sigma"], dtype=torch.float32)
    if train and MODEL_FLUX in batch and noise_alpha > 0:
        clean = torch.as_tensor(batch[MODEL_FLUX], dtype=torch.float32)
        flux = torch.where(torch.isfinite(sigma),
                           inject_noise(clean, sigma, noise_alpha, generator),
                           torch.zeros_like(clean))
    else:
        flux = torch.as_tensor(batch["flux"], dtype=torch.float32)
    return (flux,), z


def loss_of(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], target: torch.Tensor,
            family: str, model_name: str, loss: str) -> torch.Tensor:
    """The training objective for one batch (NaN labels do not count)."""
    if family == "posterior":
        keep = torch.isfinite(target).all(dim=1)
        return -model(inputs[0][keep], target[keep]).mean()
    pred = model(*inputs)
    if model_name == "smnet":
        return masked_weighted_mse(pred, target)
    known = torch.isfinite(target)
    diff = torch.where(known, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    per = diff.abs() if loss == "l1" else diff**2
    return per.sum() / known.sum().clamp(min=1)


def fit_normalisation(labels: np.ndarray, names: list[str], family: str, model_name: str,
                      flux_sample: np.ndarray | None, wavelength: np.ndarray
                      ) -> Normalisation:
    """Statistics from training labels (N, K) and, for emulators, a sample of flux (n, L)."""
    scaler = LabelScaler.fit(torch.as_tensor(labels))
    norm = Normalisation(labels=list(names), mean=scaler.mean.tolist(), std=scaler.std.tolist(),
                         low=np.nanmin(labels, axis=0).tolist(),
                         high=np.nanmax(labels, axis=0).tolist())
    if family == "emulator" and flux_sample is not None:
        norm.flux_scale = float(np.percentile(flux_sample, 99.9) * 1.05) or 1.0
        if model_name == "smnet":
            s = Log1pFluxScaler.fit(torch.as_tensor(flux_sample, dtype=torch.float32))
            norm.log1p = (float(s.scale), float(s.maximum) * 1.05)
        if model_name == "transformer_payne":
            norm.wavelength = np.asarray(wavelength, dtype=np.float64).tolist()
    return norm


def lr_lambda(total_steps: int, warmup_fraction: float, min_ratio: float):
    """Linear warm-up for ``warmup_fraction`` of the steps, then cosine decay to min_ratio."""
    warm = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return float(min_ratio + (1 - min_ratio) * 0.5 * (1 + np.cos(np.pi * progress)))

    return factor
