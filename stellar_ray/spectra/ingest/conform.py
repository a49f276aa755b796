"""Bring one raw spectrum onto the dataset: checks, units, medium, resampling, S/N."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy import units as u

from ...errors import SpectraError
from ...quantities import SNR_WINDOW_A
from ..batch import SpectrumBatch, find_problems
from ..grid import WavelengthGrid
from ..manifest import Manifest
from ..resample import Resampler
from ..resolution import degrade
from ..schema import UNUSABLE, MaskBit
from ..units import air_to_vacuum, convert_flux, to_angstrom, vacuum_to_air
from .raw import RawSpectrum, Reject


@dataclass(frozen=True)
class Target:
    """What every spectrum is conformed to."""

    grid: WavelengthGrid
    flux_unit: u.UnitBase
    uncertainties: str = "measured"  # or "none" for noiseless model grids
    mask_nonfinite: bool = False  # mask NaN/inf flux instead of rejecting the spectrum
    estimate_sigma: bool = False  # DER_SNR noise for spectra without uncertainties
    resolving_power: float | None = None  # of inputs that do not state their resolution
    lsf_fwhm: float | None = None  # Å, likewise
    degrade_to: float | None = None  # convolve down to this resolving power


@dataclass
class Row:
    """A spectrum on the dataset grid, ready for a :class:`SpectrumBatch`."""

    spectrum_id: str
    flux: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray
    labels: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def der_snr_noise(flux: np.ndarray) -> float:
    """Per-pixel noise of a spectrum by the DER_SNR estimator (Stoehr et al. 2008)."""
    f = flux[np.isfinite(flux)]
    if f.size < 5:
        return float("nan")
    return float(1.482602 / np.sqrt(6.0) * np.median(np.abs(2.0 * f[2:-2] - f[:-4] - f[4:])))


def median_snr(wave: np.ndarray, flux: np.ndarray, sigma: np.ndarray, mask: np.ndarray
               ) -> float:
    """Median flux/sigma over usable pixels in the 6180–6680 Å window, or over all usable
    pixels when the window is not covered."""
    usable = ((mask & np.uint8(UNUSABLE)) == 0) & np.isfinite(sigma) & (sigma > 0)
    window = usable & (wave >= SNR_WINDOW_A[0]) & (wave <= SNR_WINDOW_A[1])
    sel = window if window.sum() >= 10 else usable
    if not sel.any():
        return float("nan")
    return float(np.median(flux[sel] / sigma[sel]))


class Conformer:
    """Conform raw spectra to one :class:`Target`, reusing resampling matrices per input grid."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.wave_out = target.grid.wavelength()
        self._resamplers: dict[bytes, Resampler] = {}

    def __call__(self, raw: RawSpectrum) -> Row | Reject:
        try:
            return self._conform(raw)
        except SpectraError as err:
            return Reject(raw.source, raw.row, raw.spectrum_id, err.field, err.reason)

    def _reject(self, raw: RawSpectrum, name: str, reason: str) -> SpectraError:
        return SpectraError(reason, file=raw.source, field=raw.names.get(name) or name)

    def input_resolution(self, raw: RawSpectrum) -> tuple[float | None, float | None, str]:
        """(resolving power, LSF FWHM Å, origin) of a raw spectrum: what its file states,
        else what the options say, else (None, None, 'unknown')."""
        if raw.resolving_power is not None or raw.lsf_fwhm is not None:
            return raw.resolving_power, raw.lsf_fwhm, "file"
        if self.target.resolving_power is not None or self.target.lsf_fwhm is not None:
            return self.target.resolving_power, self.target.lsf_fwhm, "option"
        return None, None, "unknown"

    def _conform(self, raw: RawSpectrum) -> Row:
        """Check, sort, convert, degrade, resample and check again: one spectrum onto the
        target."""
        wave, flux, sigma, mask = self._ascending_angstrom(raw)
        flux, mask, usable = self._usable_flux(raw, wave, flux, mask)
        sigma, estimated = self._uncertainties(raw, wave, flux, sigma, usable)
        if raw.flux_unit is not None:
            flux, sigma = convert_flux(flux, sigma, raw.flux_unit, self.target.flux_unit, wave,
                                       where=raw.source)
        if self.target.degrade_to is not None:
            wave, flux, sigma, mask = self._degraded(raw, wave, flux, sigma, mask)
        out_flux, out_sigma, out_mask = self._on_target_grid(raw, wave, flux, sigma, mask)
        metadata = dict(raw.metadata)
        if "snr" not in metadata and self.target.uncertainties != "none":
            metadata["snr"] = median_snr(self.wave_out, out_flux, out_sigma, out_mask)
        if self.target.estimate_sigma:
            metadata["sigma_estimated"] = estimated
        return Row(raw.spectrum_id, out_flux, out_sigma, out_mask, dict(raw.labels), metadata)

    def _degraded(self, raw: RawSpectrum, wave: np.ndarray, flux: np.ndarray,
                  sigma: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, ...]:
        """The spectrum convolved to ``degrade_to``, over the target's range plus a margin of
        five resolution elements."""
        r_in, fwhm, _ = self.input_resolution(raw)
        if r_in is None and fwhm is None:
            raise self._reject(raw, "resolution", "the resolution is unknown, so it cannot be "
                               "degraded: the file states none; pass --resolution R or --fwhm Å")
        margin = 5.0 * self.wave_out[-1] / self.target.degrade_to
        inside = (wave >= self.wave_out[0] - margin) & (wave <= self.wave_out[-1] + margin)
        if inside.sum() < 2:
            return wave, flux, sigma, mask
        try:
            return degrade(wave[inside], flux[inside], sigma[inside], mask[inside],
                           target_resolving_power=self.target.degrade_to,
                           resolving_power=r_in, lsf_fwhm=fwhm, where=raw.source)
        except SpectraError as err:
            raise self._reject(raw, "resolution", err.reason) from err

    def _ascending_angstrom(self, raw: RawSpectrum
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """(wave Å in the target's medium, flux, sigma or None, mask), ascending in λ."""
        n = raw.wave.size
        for name, arr in (("flux", raw.flux), ("sigma", raw.sigma), ("mask", raw.mask)):
            if arr is not None and arr.shape != (n,):
                raise self._reject(raw, name, f"wrong array length: {arr.size} values, the "
                                   f"wavelength array ({raw.names['wave']}) has {n}")
        if n < 2:
            raise self._reject(raw, "wave", "fewer than 2 pixels")
        wave = to_angstrom(raw.wave, raw.wave_unit)
        if not np.all(np.isfinite(wave)):
            raise self._reject(raw, "wave", "non-finite wavelength")
        step = np.diff(wave)
        order = slice(None)
        if np.all(step < 0):
            order = slice(None, None, -1)
        elif not np.all(step > 0):
            i = int(np.flatnonzero((step <= 0) if step[0] > 0 else (step >= 0))[0]) + 1
            raise self._reject(raw, "wave", f"wavelengths not monotonic at index {i} "
                               f"({raw.wave[i - 1]} then {raw.wave[i]})")
        wave = wave[order]
        flux = np.asarray(raw.flux, dtype=np.float64)[order]
        mask = (np.zeros(n, np.uint8) if raw.mask is None else raw.mask.astype(np.uint8))[order]
        sigma = None if raw.sigma is None else np.asarray(raw.sigma, np.float64)[order]
        if raw.medium != self.target.grid.medium:
            wave = air_to_vacuum(wave) if raw.medium == "air" else vacuum_to_air(wave)
        return wave, flux, sigma, mask

    def _usable_flux(self, raw: RawSpectrum, wave: np.ndarray, flux: np.ndarray,
                     mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Non-finite flux rejected, or masked with ``mask_nonfinite``; unusable pixels set
        to 0. Returns (flux, mask, usable)."""
        usable = (mask & np.uint8(UNUSABLE)) == 0
        bad_flux = usable & ~np.isfinite(flux)
        if bad_flux.any():
            if not self.target.mask_nonfinite:
                i = int(np.flatnonzero(bad_flux)[0])
                raise self._reject(raw, "flux", f"non-finite flux ({flux[i]}) at {bad_flux.sum()}"
                                   f" pixel(s), first at index {i} (λ = {wave[i]:.2f} Å)")
            mask[bad_flux] |= np.uint8(MaskBit.NONFINITE_INPUT)
            usable &= ~bad_flux
        return np.where(usable, flux, 0.0), mask, usable

    def _uncertainties(self, raw: RawSpectrum, wave: np.ndarray, flux: np.ndarray,
                       sigma: np.ndarray | None, usable: np.ndarray
                       ) -> tuple[np.ndarray, bool]:
        """σ per pixel (+inf where unusable), estimated with DER_SNR when the file has none
        and that is asked for; returns (sigma, estimated)."""
        estimated = False
        if self.target.uncertainties == "none":
            sigma = np.ones(wave.size)
        elif sigma is None:
            if not self.target.estimate_sigma:
                raise self._reject(raw, "sigma", "no uncertainties in the file (pass "
                                   "--noiseless for model spectra, or --estimate-sigma to "
                                   "estimate them with DER_SNR)")
            noise = der_snr_noise(flux[usable])
            if not noise > 0:
                raise self._reject(raw, "sigma", "cannot estimate the noise (DER_SNR gave "
                                   f"{noise})")
            sigma, estimated = np.full(wave.size, noise), True
        bad_sigma = usable & ~(np.isfinite(sigma) & (sigma > 0))
        if bad_sigma.any():
            i = int(np.flatnonzero(bad_sigma)[0])
            raise self._reject(raw, "sigma", f"sigma must be finite and > 0: {sigma[i]} at "
                               f"{bad_sigma.sum()} pixel(s), first at index {i} "
                               f"(λ = {wave[i]:.2f} Å)")
        return np.where(usable, sigma, np.inf), estimated

    def _on_target_grid(self, raw: RawSpectrum, wave: np.ndarray, flux: np.ndarray,
                        sigma: np.ndarray, mask: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flux, sigma, mask) on the dataset grid (resampled unless already on it), checked
        against the row rules and for overlap."""
        if wave.size == self.wave_out.size and np.allclose(wave, self.wave_out, rtol=1e-10,
                                                            atol=0):
            out = (flux.astype(np.float32), sigma.astype(np.float32), mask)
        else:
            out = self._resampler(wave).apply(flux, sigma, mask)
        out_flux, out_sigma, out_mask = out
        if self.target.uncertainties == "none":
            out_sigma = np.zeros_like(out_sigma)
        problems = find_problems(np.array([raw.spectrum_id], dtype=object), out_flux[None],
                                 out_sigma[None], out_mask[None], self.target.uncertainties)
        if problems:
            raise self._reject(raw, problems[0].field, problems[0].reason)
        if (out_mask & np.uint8(MaskBit.NO_DATA)).all():
            raise self._reject(raw, "wave", f"no overlap with the dataset grid "
                               f"({self.wave_out[0]:.1f}–{self.wave_out[-1]:.1f} Å); the "
                               f"spectrum covers {wave[0]:.1f}–{wave[-1]:.1f} Å")
        return out_flux, out_sigma, out_mask

    def _resampler(self, wave: np.ndarray) -> Resampler:
        key = hashlib.sha1(np.ascontiguousarray(wave).tobytes()).digest()
        if key not in self._resamplers:
            self._resamplers[key] = Resampler.between(wave, self.wave_out)
        return self._resamplers[key]


def rows_to_batch(rows: Sequence[Row], manifest: Manifest) -> SpectrumBatch:
    """Conformed rows as a batch of ``manifest``'s schema (labels and metadata it does not
    list are left out; noiseless datasets keep the flux as model flux too)."""
    known = set(manifest.label_names)
    meta_names = {f.name for f in manifest.metadata_fields()}
    flux = np.stack([r.flux for r in rows])
    return SpectrumBatch(
        spectrum_id=[r.spectrum_id for r in rows],
        flux=flux,
        sigma=np.stack([r.sigma for r in rows]),
        mask=np.stack([r.mask for r in rows]),
        model_flux=flux if manifest.model_flux else None,
        labels={n: np.array([r.labels.get(n, np.nan) for r in rows]) for n in known} or None,
        metadata={n: np.array([r.metadata.get(n) for r in rows], dtype=object)
                  for n in meta_names if any(n in r.metadata for r in rows)},
    )
