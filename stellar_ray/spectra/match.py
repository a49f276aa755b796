"""Bringing spectra to a model's frame: rest frame, the model's resolution, the model's grid.

A dataset on another wavelength grid, at a higher resolving power or Doppler-shifted is
mapped onto the grid a model was trained on by one sparse linear operator per spectrum,
``A = Rebin(λ_work / D → λ_model) · K · Rebin(λ_data → λ_work)``: the data rebinned
(flux-conserving) onto a uniform ln λ working grid, convolved there with the Gaussian that
takes the data's resolution to the model's (:mod:`.resolution`; omitted, with the working
grid, when no degradation is needed), and rebinned onto the model's pixels at rest, the
working grid's wavelengths divided by the Doppler factor D = 1 + v/c.
Unusable pixels get no weight; because the operator is built whole, σ is propagated exactly
for independent input pixels (Var = (A∘A)·σ²).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import SpectraError
from ..quantities import doppler_factor
from .grid import WavelengthGrid
from .resample import Resampler
from .resolution import FWHM_PER_SIGMA, Resolution, fwhm_ln, working_kernel
from .schema import UNUSABLE, MaskBit

#: An output pixel needs this share of its weight from usable input pixels.
MIN_USABLE_WEIGHT = 0.5
#: Without a convolution, data are interpolated onto pixels up to this many times as wide
#: as theirs (ln λ), and rebinned onto wider ones.
INTERPOLATE_BELOW = 1.5
#: Resolving powers within this fraction count as equal (no degradation).
SAME_RESOLUTION = 1e-3


def resolution_width(wave_a: np.ndarray, resolution: list[Resolution]) -> np.ndarray | None:
    """The LSF FWHM in ln λ at each wavelength from a dataset's resolution pieces, or None
    if they are unknown or do not cover every wavelength (a piece's value reaches half-way
    to the next one over a gap)."""
    if not resolution:
        return None
    width = np.full(wave_a.shape, np.nan)
    pieces = sorted(resolution, key=lambda r: r.lo)
    for i, piece in enumerate(pieces):
        lo = piece.lo if i == 0 else 0.5 * (pieces[i - 1].hi + piece.lo)
        hi = piece.hi if i == len(pieces) - 1 else 0.5 * (piece.hi + pieces[i + 1].lo)
        inside = (wave_a >= lo * (1 - 1e-9)) & (wave_a <= hi * (1 + 1e-9))
        width[inside] = fwhm_ln(wave_a[inside], piece.resolving_power, piece.lsf_fwhm)
    return None if np.isnan(width).any() else width


@dataclass(frozen=True)
class GridMatcher:
    """Maps spectra (B, N) on a dataset's grid to (B, M) on a model's, at the model's
    resolution and (optionally per spectrum) at rest.

    ``base_wave`` (W,) Å are the wavelengths the final rebinning starts from (the working
    grid if there is a convolution, else the data's own); ``pre`` (W, N) the operator up to
    there (None: identity)."""

    target_wave: np.ndarray
    base_wave: np.ndarray
    pre: sp.csr_matrix | None
    degrades: bool
    resamples: bool

    @classmethod
    def between(cls, source: WavelengthGrid, source_resolution: list[Resolution],
                target: WavelengthGrid, target_resolution: list[Resolution], *,
                where: str | None = None) -> GridMatcher:
        """The matcher from a dataset (grid, resolution pieces) to a model's. Raises
        :class:`SpectraError` naming ``where`` if the data's resolution is lower than the
        model's anywhere on the model's grid, or if the model records its resolution and
        the dataset's grid differs while the dataset records none."""
        if source.medium != target.medium:
            raise SpectraError(f"the dataset's wavelengths are in {source.medium} and the "
                               f"model's in {target.medium}; ingest the data in "
                               f"{target.medium}", file=where, field="grid")
        wave_s, wave_t = source.wavelength(), target.wavelength()
        resamples = source != target
        kernel_sigma = _kernel_sigma(wave_s, source_resolution, wave_t, target_resolution,
                                     resamples, where)
        if kernel_sigma is None:
            return cls(wave_t, wave_s, None, False, resamples)
        x, kernel = working_kernel(np.log(wave_s), kernel_sigma)
        work = np.exp(x)
        pre = (kernel @ Resampler.between(wave_s, work).weights).tocsr()
        return cls(wave_t, work, pre, True, True)

    @property
    def identity(self) -> bool:
        """True when the spectra are already in the model's frame (no RV given)."""
        return not (self.degrades or self.resamples)

    def operator(self, doppler: float = 1.0) -> tuple[sp.csr_matrix, np.ndarray]:
        """(A (M, N), covered (M,)) for spectra observed with Doppler factor ``doppler``.

        Without a convolution, onto pixels no wider than 1.5 of the data's, the data are
        interpolated (cubic convolution) instead: their pixel values already average over a
        pixel, and rebinning onto pixels of the same width would average a second time
        (a shift of half a pixel would smooth the lines by a further pixel box)."""
        if self.pre is None and _median_width(self.target_wave) <= (
                INTERPOLATE_BELOW * _median_width(self.base_wave)):
            return cubic_interpolation(self.base_wave, self.target_wave * doppler)
        rebin = Resampler.between(self.base_wave / doppler, self.target_wave)
        a = rebin.weights if self.pre is None else (rebin.weights @ self.pre).tocsr()
        return a, rebin.covered

    def apply(self, flux: np.ndarray, sigma: np.ndarray, mask: np.ndarray,
              rv_kms: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flux, sigma, mask) (B, M) in the model's frame from (B, N) arrays; ``rv_kms``
        (B,) the spectra's radial velocities (None or NaN: at rest). Output pixels with less
        than half their weight from usable input are unusable (NO_DATA outside the data, else
        BAD_PIXEL); those with some unusable input are flagged INTERPOLATED."""
        if rv_kms is None or not np.isfinite(rv_kms).any():
            a, covered = self.operator()
            return _applied(a, covered, flux, sigma, mask)
        d = doppler_factor(np.where(np.isfinite(rv_kms), rv_kms, 0.0))
        out = [_applied(*self.operator(float(d[i])), flux[i:i + 1], sigma[i:i + 1],
                        mask[i:i + 1]) for i in range(len(flux))]
        return tuple(np.concatenate(parts) for parts in zip(*out))


def _median_width(wave: np.ndarray) -> float:
    """Median pixel width in ln λ."""
    return float(np.median(np.diff(np.log(wave))))


def cubic_interpolation(wave_in: np.ndarray, wave_out: np.ndarray
                        ) -> tuple[sp.csr_matrix, np.ndarray]:
    """(W (M, N), covered (M,)): Keys' cubic convolution (a = −½) of values on increasing
    ``wave_in`` (N,) Å at ``wave_out`` (M,) Å, in the input's pixel-index coordinate; taps
    beyond the ends repeat the end pixels; ``covered`` is False outside the input range."""
    n = len(wave_in)
    pos = np.interp(wave_out, wave_in, np.arange(n, dtype=np.float64))
    covered = (wave_out >= wave_in[0]) & (wave_out <= wave_in[-1])
    base = np.floor(pos).astype(np.int64)
    t = pos - base
    weights = np.stack([((-0.5 * t + 1.0) * t - 0.5) * t,
                        (1.5 * t - 2.5) * t * t + 1.0,
                        ((-1.5 * t + 2.0) * t + 0.5) * t,
                        (0.5 * t - 0.5) * t * t], axis=1)
    cols = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, n - 1)
    rows = np.repeat(np.arange(len(wave_out)), 4)
    matrix = sp.csr_matrix((weights.ravel(), (rows, cols.ravel())), shape=(len(wave_out), n))
    matrix.eliminate_zeros()
    return matrix, covered


def _kernel_sigma(wave_s: np.ndarray, source_resolution: list[Resolution],
                  wave_t: np.ndarray, target_resolution: list[Resolution], resamples: bool,
                  where: str | None) -> np.ndarray | None:
    """(N,) σ in ln λ of the Gaussian that takes the data to the model's resolution, or None
    when no convolution is needed or possible."""
    w_target = resolution_width(wave_t, target_resolution)
    if w_target is None:
        return None  # the model does not say: rebin only
    w_source = resolution_width(wave_s, source_resolution)
    if w_source is None:
        if not resamples:
            return None
        raise SpectraError("the dataset records no resolution, so it cannot be matched to "
                           f"the model's (R ≈ {1 / np.median(w_target):.0f}); ingest it with "
                           "--resolution R or --fwhm Å", file=where, field="resolution")
    # The model's resolution over the data's pixels (constant beyond its grid's ends).
    w_model = np.interp(wave_s, wave_t, w_target)
    seen = (wave_s >= wave_t[0]) & (wave_s <= wave_t[-1])
    coarser = seen & (w_source > w_model * (1 + SAME_RESOLUTION))
    if coarser.any():
        i = int(np.flatnonzero(coarser)[0])
        raise SpectraError(f"the dataset's resolution is lower than the model's: R = "
                           f"{1 / w_source[i]:.0f} at {wave_s[i]:.1f} Å where the model was "
                           f"trained at R = {1 / w_model[i]:.0f}; a model trained at this "
                           "resolution or lower is needed", file=where, field="resolution")
    if np.all(w_source[seen] >= w_model[seen] * (1 - SAME_RESOLUTION)):
        return None
    return np.sqrt(np.clip(w_model**2 - w_source**2, 0.0, None)) / FWHM_PER_SIGMA


def _applied(a: sp.csr_matrix, covered: np.ndarray, flux: np.ndarray, sigma: np.ndarray,
             mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A applied to a batch (B, N) -> (B, M) flux, sigma, mask."""
    mask = np.asarray(mask, dtype=np.uint8)
    good = ((mask & np.uint8(UNUSABLE)) == 0) & np.isfinite(flux) & np.isfinite(sigma)
    f = np.where(good, flux, 0.0).astype(np.float64).T
    var = np.where(good, np.asarray(sigma, np.float64) ** 2, 0.0).T
    u = good.astype(np.float64).T
    w_good = (a @ u).T
    w_all = np.asarray(a.sum(axis=1)).ravel()[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        out_flux = (a @ f).T / w_good
        out_sigma = np.sqrt((a.multiply(a) @ var).T) / w_good
    pattern = a.copy()
    pattern.data[:] = 1.0
    out_mask = np.zeros(out_flux.shape, dtype=np.uint8)
    for bit in MaskBit:
        hit = (pattern @ ((mask & np.uint8(bit)) != 0).astype(np.float64).T).T
        out_mask[hit > 0] |= np.uint8(bit)
    usable = covered[None, :] & (w_good > MIN_USABLE_WEIGHT * w_all) & (w_all > 0)
    partial = usable & (np.abs(w_good - w_all) > 1e-9 * np.abs(w_all))
    out_mask[usable] &= np.uint8(~UNUSABLE & 0xFF)
    out_mask[partial] |= np.uint8(MaskBit.INTERPOLATED)
    outside = ~usable & ~covered[None, :]
    out_mask[outside] |= np.uint8(MaskBit.NO_DATA)
    out_mask[~usable & ~outside] |= np.uint8(MaskBit.BAD_PIXEL)
    out_flux[~usable] = 0.0
    out_sigma[~usable] = np.inf
    return out_flux.astype(np.float32), out_sigma.astype(np.float32), out_mask
