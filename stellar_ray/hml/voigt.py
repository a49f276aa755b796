"""Pseudo-Voigt absorption lines on a pixel grid, each evaluated only within a window of
pixels around its centre (paper 001's "wing cut").

The profile is the Thompson–Cox–Hastings pseudo-Voigt (paper 001 eq. 2; Ida et al. 2000):
a mix η of a Lorentzian and a Gaussian of one FWHM f, both of unit area, so a line of
amplitude a (Å) adds a·V(λ − μ) to the optical depth τ and the spectrum is exp(−τ).
"""

from __future__ import annotations

import math

import torch

#: f⁵ = Σ_n V_n f_G^(5−n) f_L^n with f_G = 2√(2 ln 2) σ and f_L = 2γ
_FWHM_COEFFS = (1.0, 2.69269, 2.42843, 4.47163, 0.07842, 1.0)
#: η = Σ_n U_n (f_L / f)^n, n = 1..3
_ETA_COEFFS = (1.36603, -0.47719, 0.11116)
_SIGMA_TO_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))


def pseudo_voigt(offset: torch.Tensor, sigma: torch.Tensor, gamma: torch.Tensor
                 ) -> torch.Tensor:
    """Unit-area profile (Å⁻¹) at ``offset`` = λ − μ (Å) for Gaussian σ and Lorentzian
    half-width γ (Å); all broadcast together."""
    f_g = _SIGMA_TO_FWHM * sigma
    f_l = 2.0 * gamma
    f5 = sum(c * f_g ** (5 - n) * f_l ** n for n, c in enumerate(_FWHM_COEFFS))
    f = f5.clamp_min(1e-30) ** 0.2
    ratio = f_l / f
    eta = sum(c * ratio ** (n + 1) for n, c in enumerate(_ETA_COEFFS))
    half = 0.5 * f
    lorentz = half / (math.pi * (offset**2 + half**2))
    gauss = torch.exp(-4.0 * math.log(2.0) * (offset / f) ** 2) * (
        2.0 * math.sqrt(math.log(2.0) / math.pi) / f)
    return eta * lorentz + (1.0 - eta) * gauss


def line_windows(wave: torch.Tensor, mu: torch.Tensor, half_width: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel indices (..., W) of the window of 2·half_width + 1 pixels around the pixel
    nearest each centre ``mu`` (...) Å on the increasing grid ``wave`` (L,), clamped into
    the grid, and whether each index is inside the grid (the others must add nothing)."""
    centre = torch.searchsorted(wave, mu.detach().to(wave.dtype).contiguous())
    offsets = torch.arange(-half_width, half_width + 1, device=wave.device)
    index = centre.unsqueeze(-1) + offsets
    inside = (index >= 0) & (index < wave.numel())
    return index.clamp(0, wave.numel() - 1), inside


def optical_depth(wave: torch.Tensor, mu: torch.Tensor, ln_a: torch.Tensor,
                  sigma: torch.Tensor, gamma: torch.Tensor, half_width: int,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """τ (B, L) on ``wave`` (L,) Å of B spectra with N lines each, parameters (B, N):
    centre μ (Å), ln amplitude, σ and γ (Å); ``weight`` (B, N) scales each line (0 for
    padding). Differentiable in every line parameter."""
    index, inside = line_windows(wave, mu, half_width)  # (B, N, W)
    offset = (wave[index] - mu.to(wave.dtype).unsqueeze(-1)).to(ln_a.dtype)
    strength = torch.exp(ln_a)
    if weight is not None:
        strength = strength * weight
    depth = strength.unsqueeze(-1) * pseudo_voigt(offset, sigma.unsqueeze(-1),
                                                 gamma.unsqueeze(-1)) * inside
    b, n_pix = mu.shape[0], wave.numel()
    flat = (index + n_pix * torch.arange(b, device=wave.device)[:, None, None]).reshape(-1)
    tau = torch.zeros(b * n_pix, dtype=depth.dtype, device=depth.device)
    return tau.index_add(0, flat, depth.reshape(-1)).reshape(b, n_pix)
