"""Spectral resolution: what a dataset records about it, and degrading a spectrum to a lower
resolving power.

A line-spread function of FWHM Δλ at λ has, in x = ln λ, the width Δλ/λ = 1/R. Convolving
with a Gaussian of FWHM w in x takes resolving power R_in to R_out with
1/R_out² = 1/R_in² + w², so the kernel that brings R_in to R_target has
w = √(1/R_target² − 1/R_in²): it exists only for R_target ≤ R_in (no sharpening).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import SpectraError
from .resample import Resampler
from .schema import UNUSABLE, MaskBit

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
#: Pixels per kernel σ on the working ln λ grid of a degradation.
PIXELS_PER_SIGMA = 4.0
#: Kernel half-width in σ.
KERNEL_HALF_WIDTH = 4.0


class Resolution(BaseModel):
    """The resolution of a dataset's spectra over [lo, hi] Å: a resolving power λ/FWHM or
    a line-spread-function FWHM in Å (constant in λ), and where the figure came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lo: float = Field(gt=0, description="Å")
    hi: float = Field(gt=0, description="Å")
    resolving_power: float | None = Field(default=None, gt=0)
    lsf_fwhm: float | None = Field(default=None, gt=0, description="Å")
    origin: Literal["file", "option", "preset", "degraded", "simulated"]

    @model_validator(mode="after")
    def _one_figure(self) -> Resolution:
        if (self.resolving_power is None) == (self.lsf_fwhm is None):
            raise ValueError("give exactly one of resolving_power and lsf_fwhm")
        return self


def fwhm_ln(wave_a: np.ndarray, resolving_power: float | None, lsf_fwhm: float | None
            ) -> np.ndarray:
    """The LSF's FWHM in ln λ at each wavelength, from R or a FWHM in Å."""
    wave_a = np.asarray(wave_a, dtype=np.float64)
    if resolving_power is not None:
        return np.full(wave_a.shape, 1.0 / resolving_power)
    if lsf_fwhm is not None:
        return lsf_fwhm / wave_a
    raise ValueError("the input resolution is unknown")


def degrade(wave_a: np.ndarray, flux: np.ndarray, sigma: np.ndarray, mask: np.ndarray, *,
            target_resolving_power: float, resolving_power: float | None = None,
            lsf_fwhm: float | None = None, where: str | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Convolve a spectrum in ln λ with the difference kernel that takes its resolution
    (``resolving_power`` or ``lsf_fwhm`` Å) to ``target_resolving_power``.

    Inputs (N,) on increasing ``wave_a`` (Å). The result is on a uniform ln λ grid with
    :data:`PIXELS_PER_SIGMA` pixels per kernel σ, ready to
    be resampled: (wave, flux, sigma, mask), each (M,); never finer than half the input's
    median sampling. σ is propagated as independent
    pixels. Raises :class:`SpectraError` if the target would sharpen the input.
    """
    x_in = np.log(wave_a)
    width_in = fwhm_ln(wave_a, resolving_power, lsf_fwhm)
    target = 1.0 / target_resolving_power
    if np.any(width_in > target * (1.0 + 1e-9)):
        have = float(np.min(1.0 / width_in))
        raise SpectraError(f"cannot sharpen: the spectrum's resolving power is {have:.0f} "
                           f"somewhere, below the target {target_resolving_power:.0f}",
                           file=where, field="degrade_to")
    x, kernel = working_kernel(
        x_in, np.sqrt(np.clip(target**2 - width_in**2, 0.0, None)) / FWHM_PER_SIGMA)
    wave = np.exp(x)
    flux_u, sigma_u, mask_u = Resampler.between(wave_a, wave).apply(flux, sigma, mask)
    usable = ((mask_u & np.uint8(UNUSABLE)) == 0).astype(np.float64)
    weight = kernel @ usable  # the rows sum to 1: the usable share of each kernel
    with np.errstate(invalid="ignore", divide="ignore"):
        out_flux = (kernel @ (flux_u * usable)) / weight
        safe_sigma = np.where(usable > 0, sigma_u, 0.0).astype(np.float64)
        out_sigma = np.sqrt(kernel.multiply(kernel) @ (safe_sigma**2)) / weight
    thin = ~(weight > 0.5)
    out_mask = mask_u.copy()
    out_mask[thin] |= np.uint8(MaskBit.BAD_PIXEL)
    out_flux = np.where(thin, 0.0, out_flux)
    out_sigma = np.where(thin, np.inf, out_sigma)
    return wave, out_flux, out_sigma, out_mask


def working_kernel(x_in: np.ndarray, difference_sigma: np.ndarray
                   ) -> tuple[np.ndarray, sp.csr_matrix]:
    """(uniform ln λ working grid x (M,), Gaussian rows (M, M) on it) for a degradation
    whose LSFs differ by ``difference_sigma`` (N,), σ in ln λ at the input's pixels
    ``x_in`` (N,) = ln λ.

    The grid has :data:`PIXELS_PER_SIGMA` steps per kernel σ, never finer than half the
    input's median pixel. Three pixel boxes also broaden the lines on the way, each adding
    its width²/12 to the variance: the input pixel the detector integrated over, the same
    pixel again when its value is spread flux-conservingly over the working grid, and the
    working step when that grid is rebinned onto the output; the kernel leaves them room,
    so that lines leave at the target's width (without it: 1.1 % wider from R 20,000 at 2.6
    pixels per FWHM, 6.6 % from R 8,000 at 2.5, measured through a 6,500 model's grid). An
    output pixel's own box is the output's, as the simulator's pixels have theirs."""
    step = max(float(difference_sigma.min()) / PIXELS_PER_SIGMA,
               0.5 * float(np.median(np.diff(x_in))))
    x = np.arange(x_in[0], x_in[-1] + 0.5 * step, step)
    boxes = (2.0 * np.gradient(x_in) ** 2 + step**2) / 12.0
    sigma = np.sqrt(np.clip(difference_sigma**2 - boxes, 0.0, None))
    return x, gaussian_rows(x, np.interp(x, x_in, sigma))


def gaussian_rows(x: np.ndarray, s: np.ndarray) -> sp.csr_matrix:
    """(M, M) sparse Gaussian weights on the uniform grid ``x``: row i has σ = ``s[i]``
    (pixels with σ = 0 copy themselves)."""
    step = x[1] - x[0] if x.size > 1 else 1.0
    half = int(np.ceil(KERNEL_HALF_WIDTH * float(s.max()) / step))
    offsets = np.arange(-half, half + 1)
    rows = np.repeat(np.arange(x.size), offsets.size)
    cols = rows + np.tile(offsets, x.size)
    inside = (cols >= 0) & (cols < x.size)
    rows, cols = rows[inside], cols[inside]
    d = (x[cols] - x[rows]) / np.where(s[rows] > 0, s[rows], 1.0)
    w = np.where(s[rows] > 0, np.exp(-0.5 * d**2), (cols == rows).astype(np.float64))
    w[np.abs(d) > KERNEL_HALF_WIDTH] = 0.0
    matrix = sp.csr_matrix((w, (rows, cols)), shape=(x.size, x.size))
    norm = np.asarray(matrix.sum(axis=1)).ravel()
    return sp.diags(1.0 / norm) @ matrix
