"""The continuum of a grid spectrum as paper 001 takes it out: the blackbody at the
spectrum's Teff, then a low-order polynomial per arm through the upper envelope."""

from __future__ import annotations

import numpy as np
import torch
from scipy.signal import argrelmax

#: h c / k, Å K
HC_OVER_K = 1.438776877e8


def relative_blackbody(wave: torch.Tensor, teff: torch.Tensor) -> torch.Tensor:
    """Planck B_λ(T) over its value at the grid's middle wavelength: (B, L) for ``wave``
    (L,) Å and ``teff`` (B,) K; differentiable in Teff, in ``teff``'s dtype."""
    w = wave.to(teff.dtype)
    ref = w[w.numel() // 2]
    x = HC_OVER_K / (w[None, :] * teff[:, None])
    x_ref = HC_OVER_K / (ref * teff[:, None])
    return (ref / w[None, :]) ** 5 * torch.expm1(x_ref) / torch.expm1(x)


def envelope_continuum(flux: np.ndarray, usable: np.ndarray, basis: np.ndarray,
                       iterations: int = 6, spacing: int = 4) -> np.ndarray:
    """Coefficients (M,) of ``basis`` (L, M) fitted through the upper envelope of ``flux``
    (L,): least squares through the local maxima (at least ``spacing`` pixels apart),
    repeatedly dropping maxima that fall more than 2 robust σ below the fit (they sit in
    line wings or blends)."""
    peaks = argrelmax(np.where(usable, flux, -np.inf), order=spacing)[0]
    ends = np.flatnonzero(usable)[[0, -1]] if usable.any() else np.array([], dtype=int)
    keep = np.union1d(peaks, ends)
    keep = keep[np.isfinite(flux[keep])]
    covered = np.abs(basis[keep]).sum(0) > 0
    if keep.size < basis.shape[1] or not covered.all():  # too few maxima: all pixels
        keep = np.flatnonzero(usable & np.isfinite(flux))
    coeff = np.zeros(basis.shape[1])
    for _ in range(iterations):
        coeff = np.linalg.lstsq(basis[keep], flux[keep], rcond=None)[0]
        resid = flux[keep] - basis[keep] @ coeff
        scale = 1.4826 * np.median(np.abs(resid)) + 1e-12
        inner = resid > -2.0 * scale
        if inner.all() or inner.sum() < basis.shape[1]:
            break
        keep = keep[inner]
    return coeff
