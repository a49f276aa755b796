"""``SpectrumGenerator``: labels (B, K) -> noiseless relative flux (B, L) on an instrument's
pixel grid. A differentiable ``nn.Module``: the Fisher matrix and the tests take its
Jacobian with autograd."""

from __future__ import annotations

import torch

from ..quantities import C_KMS
from .instrument import InstrumentConfig, arm_samplings, assemble
from .labels import INDEX
from .linelist import build_linelist
from .physics import LineFormation

#: Margin (km/s) around each arm for Doppler shifts and kernel wings.
MARGIN_KMS = 1200.0


class SpectrumGenerator(torch.nn.Module):
    """The built-in generator for one instrument mode.

    ``model_step_kms`` is the sampling of the internal ln λ grid: it must resolve thermal
    line widths (≈ 1–2 km/s for iron at solar temperature) for saturation to be right.
    """

    def __init__(self, instrument: InstrumentConfig, model_step_kms: float = 1.5,
                 linelist_seed: int = 20260101) -> None:
        super().__init__()
        self.instrument = instrument
        self.wave = instrument.pixel_grid().wavelength()
        lo = float(self.wave[0]) * (1 - MARGIN_KMS / C_KMS) - 5.0
        hi = float(self.wave[-1]) * (1 + MARGIN_KMS / C_KMS) + 5.0
        lines = build_linelist(lo=lo, hi=hi, seed=linelist_seed)
        self.lines = LineFormation(lines)
        self.step = model_step_kms / C_KMS
        self.arms = arm_samplings(instrument, self.wave, lambda _arm: self.step, MARGIN_KMS)

    @property
    def npix(self) -> int:
        return int(self.wave.size)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """labels (B, K) in :data:`~stellar_ray.simulation.labels.LABELS` order -> relative flux
        (B, L), continuum mean over 6180–6680 Å = 1."""
        vsini = labels[:, INDEX["vsini"]]
        pieces = [(arm, arm.observe(self.lines(labels, arm.ln_lo, arm.step, arm.n), vsini))
                  for arm in self.arms]
        return assemble(pieces, self.npix)
