"""Radial velocities by cross-correlation against rest-frame templates, in ln λ.

Spectra and templates are divided by their pseudo-continuum (:mod:`.continuum`) and their
line depths d = f/c − 1 compared. On a uniform ln λ grid a velocity is a shift, so for each
template t and shift s (pixels) the weighted correlation N(s) = Σ w d t(· − s) and the
template's weighted power Q(s) = Σ w t(· − s)² come from FFTs; with the line depths scaled
freely the χ² falls by N²/Q, and the (template, shift) that lowers it most is the coarse
answer, its normalised correlation r = N / √(Q Σ w d²) the quality of the match. The
velocity is then refined on the spectrum's own pixels: χ²(v) of the best template,
shifted and scaled, is evaluated at five velocities around the minimum (twice, the second
time at half the spacing) and a parabola through them gives v and, from its curvature,
σ_v = √(2 / χ²''), inflated by √(χ²/dof) when the template fits worse than the noise.
Weights are the inverse variances; unusable pixels have none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..quantities import C_KMS, doppler_factor
from .continuum import ContinuumConfig, divide_by_continuum


class VelocitySettings(BaseModel):
    """How radial velocities are measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rv_max_kms: float = Field(default=600.0, gt=0, description="the search covers ± this")
    min_ccf: float = Field(default=0.3, ge=0, le=1, description="a peak correlation below "
                           "this flags the velocity as unreliable")
    continuum: ContinuumConfig = Field(default_factory=ContinuumConfig)


@dataclass(frozen=True)
class Templates:
    """Rest-frame template spectra divided by their continuum: ``depth`` (T, L) = f/c − 1 at
    ``wave`` (L,) Å; ``names`` (T,) say what each one is."""

    wave: np.ndarray
    depth: np.ndarray
    names: list[str]

    @classmethod
    def of_spectra(cls, wave: np.ndarray, flux: np.ndarray, names: Sequence[str],
                   arm_npix: Sequence[int], continuum: ContinuumConfig) -> Templates:
        """Templates from noiseless rest-frame spectra (T, L) on ``wave`` (L,) Å, whose
        arms have ``arm_npix`` pixels."""
        flux = np.asarray(flux, dtype=np.float64)
        normalised, _ = divide_by_continuum(np.asarray(wave, np.float64), flux,
                                            np.ones_like(flux), arm_npix, continuum)
        usable = normalised != 0
        depth = np.where(usable, normalised.astype(np.float64) - 1.0, 0.0)
        return cls(np.asarray(wave, np.float64), depth, list(names))

    def __len__(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class Velocities:
    """Per spectrum (B,): ``rv`` and ``rv_err`` km/s, ``ccf`` the peak correlation,
    ``template`` the index of the best template, ``reliable`` False when the correlation is
    weak, the peak at the search's edge or the χ² curve not a minimum."""

    rv: np.ndarray
    rv_err: np.ndarray
    ccf: np.ndarray
    template: np.ndarray
    reliable: np.ndarray


class VelocityMeter:
    """Measures the radial velocities of spectra that share a wavelength grid."""

    def __init__(self, templates: Templates, wave: np.ndarray, arm_npix: Sequence[int],
                 settings: VelocitySettings) -> None:
        self.templates = templates
        self.wave = np.asarray(wave, dtype=np.float64)
        self.x = np.log(self.wave)
        self.arm_npix = list(arm_npix)
        self.settings = settings
        self.t_x = np.log(templates.wave)
        # the coarse grid: uniform in ln λ at the spectra's median sampling
        self.dx = float(np.median(np.diff(self.x)))
        self.grid = np.arange(self.x[0], self.x[-1] + 0.5 * self.dx, self.dx)
        self.max_shift = int(np.ceil(np.log1p(settings.rv_max_kms / C_KMS) / self.dx))
        self.nfft = int(2 ** np.ceil(np.log2(self.grid.size + 2 * self.max_shift + 1)))
        t = np.stack([self._template_at(i, self.grid) for i in range(len(templates))])
        self._t_hat = np.fft.rfft(t, self.nfft)
        self._t2_hat = np.fft.rfft(t**2, self.nfft)

    @property
    def pixel_kms(self) -> float:
        """The coarse grid's step in km/s."""
        return self.dx * C_KMS

    def _template_at(self, index: int, x: np.ndarray) -> np.ndarray:
        """Template ``index``'s line depth at ln λ ``x`` (any shape); 0 outside it."""
        return np.interp(x, self.t_x, self.templates.depth[index], left=0.0, right=0.0)

    def measure(self, flux: np.ndarray, sigma: np.ndarray, usable: np.ndarray) -> Velocities:
        """Velocities of spectra (B, N) on the meter's grid; ``usable`` (B, N) marks the
        pixels to use."""
        flux = np.where(usable, flux, 0.0).astype(np.float64)
        sigma = np.where(usable, sigma, np.inf).astype(np.float64)
        f, s = divide_by_continuum(self.wave, flux, sigma, self.arm_npix,
                                   self.settings.continuum)
        ok = usable & (f != 0) & np.isfinite(s) & (s > 0)
        depth = np.where(ok, f.astype(np.float64) - 1.0, 0.0)
        weight = np.where(ok, 1.0 / np.where(ok, s.astype(np.float64), 1.0) ** 2, 0.0)
        template, shift, ccf = self._coarse(depth, weight)
        v = (np.exp(shift * self.dx) - 1.0) * C_KMS  # D = 1 + v/c
        step = 0.5 * self.pixel_kms
        for _ in range(2):
            v, err, curved = self._refined(depth, weight, template, v, step)
            step *= 0.5
        edge = np.abs(shift) >= self.max_shift
        reliable = (ccf >= self.settings.min_ccf) & ~edge & curved & np.isfinite(v)
        return Velocities(v, err, ccf, template, reliable)

    def _coarse(self, depth: np.ndarray, weight: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(template index, shift in coarse pixels, peak correlation), each (B,)."""
        idx = np.clip(np.round((self.x - self.grid[0]) / self.dx).astype(int), 0,
                      self.grid.size - 1)
        # each spectrum's pixels binned onto the uniform grid (weighted means)
        wd = np.zeros((len(depth), self.grid.size))
        w = np.zeros_like(wd)
        for b in range(len(depth)):
            np.add.at(wd[b], idx, weight[b] * depth[b])
            np.add.at(w[b], idx, weight[b])
        power = (wd**2 / np.where(w > 0, w, 1.0)).sum(axis=1)  # Σ w d² on the grid
        wd_hat = np.fft.rfft(wd, self.nfft)[:, None, :]
        w_hat = np.fft.rfft(w, self.nfft)[:, None, :]
        corr = np.fft.irfft(wd_hat * np.conj(self._t_hat)[None], self.nfft)
        q = np.fft.irfft(w_hat * np.conj(self._t2_hat)[None], self.nfft)
        shifts = np.arange(-self.max_shift, self.max_shift + 1)
        corr, q = corr[..., shifts % self.nfft], q[..., shifts % self.nfft]  # (B, T, S)
        gain = np.where((corr > 0) & (q > 0), corr**2 / np.where(q > 0, q, 1.0), 0.0)
        flat = gain.reshape(len(depth), -1).argmax(axis=1)
        template, at = np.unravel_index(flat, gain.shape[1:])
        rows = np.arange(len(depth))
        with np.errstate(invalid="ignore", divide="ignore"):
            ccf = corr[rows, template, at] / np.sqrt(q[rows, template, at] * power)
        return template, shifts[at], np.nan_to_num(ccf)

    def _refined(self, depth: np.ndarray, weight: np.ndarray, template: np.ndarray,
                 v0: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(v, σ_v, curved) from a parabola through χ² at v0 + step·(−2…2), each (B,)."""
        offsets = np.arange(-2, 3) * step
        chi2 = np.empty((len(depth), offsets.size))
        dof = np.maximum((weight > 0).sum(axis=1) - 2, 1)
        wdd = (weight * depth**2).sum(axis=1)
        for b in range(len(depth)):
            for j, dv in enumerate(offsets):
                shifted = self.x - np.log(doppler_factor(v0[b] + dv))
                t = self._template_at(int(template[b]), shifted)
                n, q = (weight[b] * depth[b] * t).sum(), (weight[b] * t * t).sum()
                chi2[b, j] = wdd[b] - (n * n / q if q > 0 else 0.0)
        a, bb, _ = np.polyfit(offsets, chi2.T, 2)
        curved = a > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            vertex = np.where(curved, -bb / (2 * a), 0.0)
            err = np.sqrt(1.0 / np.where(curved, a, np.nan))  # χ'' = 2a, σ² = 2 / χ''
        vertex = np.clip(vertex, offsets[0], offsets[-1])
        chi2_min = chi2.min(axis=1)
        err = err * np.sqrt(np.maximum(1.0, chi2_min / dof))
        return v0 + vertex, err, curved
