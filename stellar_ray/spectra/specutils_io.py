"""Round trips with specutils, the community's spectrum object.

``to_specutils(batch, i, manifest)`` gives one row as a :class:`specutils.Spectrum`
(spectral axis in Å, flux in the dataset's unit, σ as ``StdDevUncertainty``, a boolean mask of
unusable pixels; the MaskBit flags, id, labels and medium in ``meta``).
``from_specutils(spectrum)`` reads any such object (from specutils' own readers too) as a
raw spectrum, and :func:`conform_spectra` brings raw spectra onto a dataset's grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy import units as u
from astropy.nddata import InverseVariance, StdDevUncertainty, VarianceUncertainty
from specutils import Spectrum

from ..errors import SpectraError
from .batch import SpectrumBatch
from .ingest.conform import Conformer, Target, rows_to_batch
from .ingest.pixels import sigma_from_ivar
from .ingest.raw import RawSpectrum, Reject
from .manifest import Manifest
from .schema import UNUSABLE, MaskBit


def to_specutils(batch: SpectrumBatch, i: int, manifest: Manifest) -> Spectrum:
    """Row ``i`` of ``batch`` (on ``manifest``'s grid) as a specutils Spectrum."""
    unit = u.Unit(manifest.flux_unit) if manifest.flux_unit else u.dimensionless_unscaled
    sigma = batch.sigma[i].astype(np.float64)
    unusable = (batch.mask[i] & np.uint8(UNUSABLE)) != 0
    uncertainty = None if manifest.uncertainties == "none" else StdDevUncertainty(sigma * unit)
    meta = {"spectrum_id": str(batch.spectrum_id[i]), "medium": manifest.grid.medium,
            "stellar_ray_mask": batch.mask[i].copy(),
            "labels": {k: float(v[i]) for k, v in (batch.labels or {}).items()}}
    return Spectrum(flux=batch.flux[i].astype(np.float64) * unit,
                    spectral_axis=manifest.grid.wavelength() * u.AA,
                    uncertainty=uncertainty, mask=unusable, meta=meta)


def from_specutils(spectrum: Spectrum, spectrum_id: str | None = None,
                   medium: str | None = None) -> RawSpectrum:
    """A specutils Spectrum (1-D) as a raw spectrum for :func:`conform_spectra` or ingestion.

    The id is ``spectrum_id``, else ``meta['spectrum_id']``; the medium ``medium``, else
    ``meta['medium']``, else vacuum. σ comes from a standard-deviation, variance or
    inverse-variance uncertainty; masked pixels become BAD_PIXEL (or the exact MaskBit
    flags a :func:`to_specutils` object carries).
    """
    if spectrum.flux.ndim != 1:
        raise SpectraError(f"a 1-D spectrum is needed, got flux of shape {spectrum.flux.shape}",
                           field="flux")
    meta = dict(spectrum.meta or {})
    sid = spectrum_id or meta.get("spectrum_id")
    if not sid:
        raise SpectraError("the spectrum has no id: pass spectrum_id", field="spectrum_id")
    flux = spectrum.flux
    sigma = _sigma(spectrum, flux.unit)
    mask = meta.get("stellar_ray_mask")
    if mask is None and spectrum.mask is not None:
        mask = np.where(np.asarray(spectrum.mask, bool), np.uint8(MaskBit.BAD_PIXEL),
                        np.uint8(0))
    stated = medium or meta.get("medium")
    return RawSpectrum(
        spectrum_id=str(sid), wave=spectrum.spectral_axis.to_value(u.AA, u.spectral()),
        flux=np.asarray(flux.value, dtype=np.float64), sigma=sigma,
        mask=None if mask is None else np.asarray(mask, np.uint8), wave_unit=u.AA,
        flux_unit=flux.unit, medium="air" if stated == "air" else "vacuum",
        medium_stated=stated is not None, source=f"specutils:{sid}",
        labels=dict(meta.get("labels", {})), metadata={"source": f"specutils:{sid}"})


def _sigma(spectrum: Spectrum, unit: u.UnitBase) -> np.ndarray | None:
    unc = spectrum.uncertainty
    if unc is None:
        return None
    if isinstance(unc, StdDevUncertainty):
        return np.asarray(unc.quantity.to_value(unit), dtype=np.float64)
    if isinstance(unc, VarianceUncertainty):
        return np.sqrt(np.asarray(unc.quantity.to_value(unit**2), dtype=np.float64))
    if isinstance(unc, InverseVariance):
        return sigma_from_ivar(unc.quantity.to_value(unit**-2))
    raise SpectraError(f"uncertainty type {type(unc).__name__} is not supported",
                       field="uncertainty")


def conform_spectra(spectra: Sequence[RawSpectrum], manifest: Manifest) -> SpectrumBatch:
    """Raw spectra onto ``manifest``'s grid and flux unit, as a batch for ``write_spectra``
    or a dataset writer; raises :class:`SpectraError` for the first that breaks a rule."""
    unit = u.Unit(manifest.flux_unit) if manifest.flux_unit else u.dimensionless_unscaled
    conform = Conformer(Target(grid=manifest.grid, flux_unit=unit,
                               uncertainties=manifest.uncertainties))
    rows = []
    for raw in spectra:
        row = conform(raw)
        if isinstance(row, Reject):
            raise SpectraError(row.reason, file=row.file, field=row.field)
        rows.append(row)
    return rows_to_batch(rows, manifest)
