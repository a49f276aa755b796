"""The HML generator of paper 001 (:mod:`stellar_ray.hml`): built from a clone set, not
trained, so ``stellar-ray train`` refuses it; in inference it is minimised against each
spectrum by a Gaussian process (``gp``, the paper's) or fitted like an emulator (``fit``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..normalisation import Normalisation
from .emulator import EmulatorTask


@dataclass(frozen=True)
class HMLTask(EmulatorTask):
    family = "hml"  # type: ignore[assignment]
    modes = ("gp", "fit")  # type: ignore[assignment]
    gradient_trained = False
    extrapolates = False
    takes = "labels (B, K) z-scored with normalisation.mean/std"

    @property
    def gives(self) -> str:  # type: ignore[override]
        return "flux in the grid's unit on the grid's wavelengths"

    def emulate(self, model: torch.nn.Module, norm: Normalisation, z: torch.Tensor,
                wave: torch.Tensor) -> torch.Tensor:
        return model(z)
