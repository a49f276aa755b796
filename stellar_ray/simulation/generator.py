"""``SpectrumGenerator``: labels (B, K) -> noiseless relative flux (B, L) on an instrument's
pixel grid. A differentiable ``nn.Module``: the Fisher matrix and the tests take its
Jacobian with autograd."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.fft import next_fast_len

from ..quantities import C_KMS
from .instrument import InstrumentConfig, broadening_transfer
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
                 forest_scale: float = 1.0, linelist_seed: int = 20260101) -> None:
        super().__init__()
        self.instrument = instrument
        self.wave = instrument.pixel_grid().wavelength()
        lo = float(self.wave[0]) * (1 - MARGIN_KMS / C_KMS) - 5.0
        hi = float(self.wave[-1]) * (1 + MARGIN_KMS / C_KMS) + 5.0
        lines = build_linelist(lo=lo, hi=hi, seed=linelist_seed, forest_scale=forest_scale)
        self.lines = LineFormation(lines)
        self.step = model_step_kms / C_KMS
        self.arms = []
        for arm in instrument.arms:
            sel = np.flatnonzero(arm.covers(self.wave))
            claimed = np.concatenate([a["pixels"] for a in self.arms]) if self.arms else []
            sel = np.setdiff1d(sel, claimed)
            if sel.size == 0:
                continue
            w = self.wave[sel]
            ln_lo = math.log(w[0]) - MARGIN_KMS / C_KMS
            ln_hi = math.log(w[-1]) + MARGIN_KMS / C_KMS
            n = next_fast_len(int(math.ceil((ln_hi - ln_lo) / self.step)) + 1, real=True)
            pixel_kms = float(np.median(np.diff(w) / w[:-1])) * C_KMS if w.size > 1 else 0.0
            self.arms.append({"pixels": sel, "ln_lo": ln_lo, "n": n, "pixel_kms": pixel_kms,
                              "position": (np.log(w) - ln_lo) / self.step,
                              "resolving_power": arm.resolving_power})

    @property
    def npix(self) -> int:
        return int(self.wave.size)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """labels (B, K) in :data:`~stellar_ray.simulation.labels.LABELS` order -> relative flux
        (B, L), continuum mean over 6180–6680 Å = 1."""
        b = labels.shape[0]
        out = torch.empty(b, self.npix, dtype=labels.dtype, device=labels.device)
        vsini = labels[:, INDEX["vsini"]]
        pieces = []
        for arm in self.arms:
            intrinsic = self.lines(labels, arm["ln_lo"], self.step, arm["n"])
            # The transfer function in float64 whatever the working precision: the rotation
            # kernel's transform cancels catastrophically in float32 at small arguments.
            freq = torch.fft.rfftfreq(arm["n"], d=self.step * C_KMS, device=labels.device,
                                      dtype=torch.float64)
            transfer = broadening_transfer(freq, vsini.to(torch.float64),
                                           arm["resolving_power"], arm["pixel_kms"]
                                           ).to(labels.dtype)
            smooth = torch.fft.irfft(torch.fft.rfft(intrinsic, dim=1) * transfer, n=arm["n"],
                                     dim=1)
            pos = torch.as_tensor(arm["position"], dtype=labels.dtype, device=labels.device)
            left = torch.floor(pos).long()
            frac = pos - left
            sampled = smooth[:, left] * (1 - frac) + smooth[:, left + 1] * frac
            pieces.append((arm["pixels"], sampled))
        if len(pieces) == 1 and pieces[0][0].size == self.npix:
            return pieces[0][1]
        for pixels, sampled in pieces:
            out = out.index_copy(1, torch.as_tensor(pixels, device=labels.device), sampled)
        return out
