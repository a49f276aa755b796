"""Emulators, labels → spectrum (papers 000, 002): z-scored labels in, rest-frame flux out.

The target is the noiseless model flux where the dataset keeps it (else the stored flux),
encoded per card: ``scaled`` (flux / flux_scale, The Payne, BigPayne, TransformerPayne) or
``log1p`` (SM-Net's log1p scaling with a masked, weighted MSE, paper 000 §2). Models that
query wavelengths (TransformerPayne) train on a random subset of the grid per spectrum and
step (paper 002) and are evaluated on the whole grid. Validation metrics are in the
dataset's flux unit; in inference an emulator is fitted to each spectrum (fit mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ...spectra.schema import MODEL_FLUX
from ..metrics import emulator_metrics
from ..normalisation import Normalisation, Transform, labels_of
from ..smnet import Log1pFluxScaler, masked_weighted_mse
from ..transformer_payne import random_wavelength_subset
from .base import Inputs, Task
from .regressor import masked_loss

#: Wavelengths per spectrum and step when training a wavelength-query emulator (paper 002
#: uses 8192; this keeps CPU steps short).
WAVELENGTH_SUBSET = 1024
#: Reference wavelengths kept in the artifact for a wavelength-query emulator.
REFERENCE_WAVELENGTHS = 256


def target_flux(batch: dict[str, np.ndarray]) -> torch.Tensor:
    """(B, L) noiseless model flux where the batch has it, else the stored flux."""
    return torch.as_tensor(batch[MODEL_FLUX] if MODEL_FLUX in batch else batch["flux"],
                           dtype=torch.float32)


@dataclass(frozen=True)
class EmulatorTask(Task):
    """``target``: how flux is encoded for the model; ``wavelength_queries``: the model
    takes the wavelengths to evaluate; ``median_baseline``: start the model's baseline at
    the training median (SM-Net)."""

    target: Literal["scaled", "log1p"] = "scaled"
    wavelength_queries: bool = False
    median_baseline: bool = False

    family = "emulator"
    modes = ("fit",)
    flux_normalise = "none"
    takes = "labels (B, K) z-scored with normalisation.mean/std"

    @property
    def gives(self) -> str:  # type: ignore[override]
        return ("log1p-scaled flux (normalisation.log1p)" if self.target == "log1p"
                else "flux / normalisation.flux_scale")

    # -- encoding of flux -----------------------------------------------------------
    def encode(self, flux: torch.Tensor, norm: Normalisation) -> torch.Tensor:
        """Flux in the dataset's unit -> model target."""
        if self.target == "log1p":
            return Log1pFluxScaler(*norm.log1p)(flux)
        return flux / norm.flux_scale

    def decode(self, out: torch.Tensor, norm: Normalisation) -> torch.Tensor:
        """Model output -> flux in the dataset's unit."""
        if self.target == "log1p":
            return Log1pFluxScaler(*norm.log1p).to(out.device).inverse(out)
        return out * norm.flux_scale

    # -- shapes, normalisation, start -------------------------------------------------
    def model_args(self, given: dict[str, Any], n_labels: int, n_pix: int) -> dict[str, Any]:
        args = dict(given)
        args.setdefault("n_labels", n_labels)
        if not self.wavelength_queries:
            args.setdefault("n_pix", n_pix)
        return args

    @property
    def needs_flux_sample(self) -> bool:
        return True

    def fit_normalisation(self, labels: np.ndarray, names: list[str],
                          flux_sample: np.ndarray | None,
                          transforms: dict[str, Transform] | None = None) -> Normalisation:
        norm = Normalisation.of_labels(labels, names, transforms)
        if flux_sample is None:
            return norm
        flux = np.asarray(flux_sample, dtype=np.float64)
        norm.flux_scale = float(np.percentile(flux, 99.9) * 1.05) or 1.0
        if self.target == "log1p":
            s = Log1pFluxScaler.fit(torch.as_tensor(flux, dtype=torch.float32))
            norm.log1p = (float(s.scale), float(s.maximum) * 1.05)
        return norm

    def warm_start(self, norm: Normalisation, flux_sample: np.ndarray | None
                   ) -> list[float] | None:
        if not self.median_baseline or flux_sample is None:
            return None
        encoded = self.encode(torch.as_tensor(np.asarray(flux_sample), dtype=torch.float32),
                              norm)
        return torch.median(encoded, dim=0).values.tolist()

    def init_model(self, model: torch.nn.Module, warm: list[float] | None) -> None:
        if warm is not None:
            model.init_baseline(torch.as_tensor(warm, dtype=torch.float32)[None, :])

    # -- training ---------------------------------------------------------------------
    def prepare(self, batch: dict[str, np.ndarray], norm: Normalisation, wave: np.ndarray, *,
                noise_alpha: float, train: bool, generator: torch.Generator
                ) -> tuple[Inputs, torch.Tensor]:
        z = norm.z(labels_of(batch, norm.labels))
        target = self.encode(target_flux(batch), norm)
        if not self.wavelength_queries:
            return (z,), target
        grid = torch.as_tensor(wave, dtype=torch.float32)
        if not train:
            return (z, grid), target
        idx, subset = random_wavelength_subset(grid, target.shape[0],
                                               min(WAVELENGTH_SUBSET, grid.numel()), generator)
        return (z, subset), target.gather(1, idx)

    def loss(self, model: torch.nn.Module, inputs: Inputs, target: torch.Tensor,
             kind: str) -> torch.Tensor:
        pred = model(*inputs)
        if self.target == "log1p":
            return masked_weighted_mse(pred, target)
        return masked_loss(pred, target, kind)

    # -- validation -------------------------------------------------------------------
    def outputs(self, model: torch.nn.Module, inputs: Inputs, target: torch.Tensor,
                batch: dict[str, np.ndarray], norm: Normalisation,
                generator: torch.Generator) -> dict[str, np.ndarray]:
        return {"pred": self.decode(model(*inputs), norm).cpu().numpy(),
                "true": self.decode(target, norm).cpu().numpy()}

    def metrics(self, parts: dict[str, np.ndarray], norm: Normalisation) -> dict[str, float]:
        return emulator_metrics(parts["pred"], parts["true"])

    def headline(self, metrics: dict[str, Any], labels: Sequence[str]) -> dict[str, float]:
        return {"flux MAE": metrics["mae"]} if "mae" in metrics else {}

    # -- the artifact -----------------------------------------------------------------
    def reference_inputs(self, norm: Normalisation, wave: np.ndarray,
                         batch: dict[str, np.ndarray], n: int = 4) -> dict[str, torch.Tensor]:
        z = norm.z(labels_of(batch, norm.labels))[:n]
        out = {"labels_z": torch.nan_to_num(z)}
        if self.wavelength_queries:
            out["wavelength"] = torch.tensor(wave[:REFERENCE_WAVELENGTHS], dtype=torch.float32)
        return out

    def run_reference(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]
                      ) -> dict[str, torch.Tensor]:
        model.eval()
        args = (inputs["labels_z"],) if "wavelength" not in inputs else (
            inputs["labels_z"], inputs["wavelength"])
        with torch.no_grad():
            return {"flux": model(*args)}

    # -- inference --------------------------------------------------------------------
    def emulate(self, model: torch.nn.Module, norm: Normalisation, z: torch.Tensor,
                wave: torch.Tensor) -> torch.Tensor:
        out = model(z, wave.to(z.dtype)) if self.wavelength_queries else model(z)
        return self.decode(out, norm)
