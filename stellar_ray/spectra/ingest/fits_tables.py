"""FITS binary-table spectra, three layouts:

- **ESO Phase 3 / 4MOST L1** (``PHASE3SPECTRUM``): each row holds array columns ``WAVE``,
  ``FLUX``, ``ERR_FLUX``, ``QUAL``; one spectrum per row.
- **4MOST L1 per arm**: one such one-row table per arm (extensions named after the arms,
  e.g. ``BLUE``, ``GREEN``, ``RED``), joined in increasing wavelength into one multi-arm
  spectrum; where arms overlap, the redder arm starts after the bluer arm's last pixel.
- **SDSS/BOSS** (``COADD``): one row per pixel with scalar columns ``loglam`` (log10 Å),
  ``flux``, ``ivar``, ``and_mask`` (and ``wdisp``, the LSF σ in pixels); the primary
  header's ``COEFF0``/``COEFF1`` give the exact log-linear grid.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.io import fits

from ...errors import SpectraError
from ..resolution import FWHM_PER_SIGMA
from ..units import parse_unit
from .fits_header import header_metadata, header_resolution, medium_of, spectrum_id
from .ids import row_suffix
from .options import ReaderOptions
from .pixels import mask_from_quality, sigma_and_mask_from_ivar
from .raw import RawSpectrum, Reject

WAVE_COLUMNS = ("WAVE", "WAVELENGTH", "LAMBDA", "LOGLAM")
FLUX_COLUMNS = ("FLUX", "FLUX_REDUCED", "SPEC")
SIGMA_COLUMNS = ("ERR_FLUX", "ERR", "ERROR", "SIGMA", "FLUX_ERR", "NOISE")
IVAR_COLUMNS = ("IVAR", "INVVAR", "ERR_IVAR")
QUAL_COLUMNS = ("QUAL", "QUALITY", "MASK", "AND_MASK")
#: The LSF's Gaussian σ per pixel, in pixels of the log-linear grid (SDSS ``wdisp``).
DISPERSION_COLUMNS = ("WDISP",)


def find_column(names: list[str], wanted: tuple[str, ...]) -> str | None:
    upper = {n.upper(): n for n in names}
    return next((upper[w] for w in wanted if w in upper), None)


@dataclass
class _Columns:
    """The columns a table's spectrum is read from, and their units."""

    wave: str
    flux: str
    sigma: str | None
    ivar: str | None
    qual: str | None
    dispersion: str | None
    wave_unit: u.UnitBase
    flux_unit: u.UnitBase | None

    @classmethod
    def of(cls, hdu: fits.BinTableHDU, header: fits.Header, source: str) -> _Columns:
        names = hdu.columns.names
        wave, flux = find_column(names, WAVE_COLUMNS), find_column(names, FLUX_COLUMNS)
        if wave is None:
            raise SpectraError(f"no wavelength column (looked for {', '.join(WAVE_COLUMNS)})",
                               file=source, field="WAVE")
        sigma = find_column(names, SIGMA_COLUMNS)

        def unit_of(col: str, wavelength: bool = False) -> u.UnitBase | None:
            text = hdu.columns[col].unit
            if text is None:
                return u.AA if wavelength else None
            return parse_unit(text, where=source, field=f"TUNIT of {col}",
                              wavelength=wavelength)

        flux_unit = unit_of(flux)
        if flux_unit is None and header.get("BUNIT"):
            flux_unit = parse_unit(header["BUNIT"], where=source, field="BUNIT")
        return cls(wave=wave, flux=flux, sigma=sigma,
                   ivar=None if sigma else find_column(names, IVAR_COLUMNS),
                   qual=find_column(names, QUAL_COLUMNS),
                   dispersion=find_column(names, DISPERSION_COLUMNS),
                   wave_unit=u.AA if wave.upper() == "LOGLAM" else unit_of(wave, True),
                   flux_unit=flux_unit)

    def arrays(self, rec) -> tuple[np.ndarray, ...]:
        """(wave, flux, sigma or None, mask or None) of one row (or, for a per-pixel table,
        of the whole table passed as ``rec``)."""
        def col(name: str) -> np.ndarray:
            return np.asarray(rec[name], dtype=np.float64).ravel()

        wave = col(self.wave)
        if self.wave.upper() == "LOGLAM":
            wave = 10.0 ** wave
        sigma = mask = None
        if self.sigma:
            sigma = col(self.sigma)
        elif self.ivar:
            sigma, mask = sigma_and_mask_from_ivar(col(self.ivar))
        if self.qual:
            qual = mask_from_quality(np.ravel(rec[self.qual]))
            mask = qual if mask is None else mask | qual
        return wave, col(self.flux), sigma, mask

    @property
    def names(self) -> dict[str, str]:
        return {"wave": self.wave, "flux": self.flux, "sigma": self.sigma or self.ivar or "",
                "mask": self.qual or ""}


def read_tables(tables: list[fits.BinTableHDU], primary: fits.Header, source: str,
                options: ReaderOptions) -> Iterator[RawSpectrum | Reject]:
    """The spectra of a file's binary tables, by layout (see the module docstring)."""
    first = tables[0]
    header = primary.copy()
    header.update(first.header)
    columns = _Columns.of(first, header, source)
    if first.columns[columns.flux].format.repeat in (None, 1) and len(first.data) > 1:
        yield _read_per_pixel(first, header, columns, source, options)
    elif len(tables) > 1 and all(len(t.data) == 1 for t in tables):
        yield _join_arms(tables, primary, source, options)
    else:
        yield from _read_rows(first, header, columns, source, options)


def _read_rows(hdu: fits.BinTableHDU, header: fits.Header, columns: _Columns, source: str,
               options: ReaderOptions) -> Iterator[RawSpectrum | Reject]:
    medium, stated = medium_of(header, options)
    resolving_power, fwhm = header_resolution(header)
    nrows = len(hdu.data)
    for row in range(nrows):
        rec = hdu.data[row]
        wave, flux, sigma, mask = columns.arrays(rec)
        where = source if nrows == 1 else f"{source}#{row}"
        if options.id_key and options.id_key in rec.array.names:
            sid, suffix = str(rec[options.id_key]).strip(), ""
        else:
            try:
                sid, suffix = spectrum_id(header, source, options), row_suffix(row, nrows)
            except SpectraError as err:
                yield Reject(source, row, None, err.field, err.reason)
                continue
        yield RawSpectrum(
            spectrum_id=sid, id_suffix=suffix, wave=wave, flux=flux, sigma=sigma, mask=mask,
            wave_unit=columns.wave_unit, flux_unit=columns.flux_unit, medium=medium,
            medium_stated=stated, source=where, row=row, resolving_power=resolving_power,
            lsf_fwhm=fwhm, metadata=header_metadata(header, where), names=columns.names)


def _read_per_pixel(hdu: fits.BinTableHDU, header: fits.Header, columns: _Columns,
                    source: str, options: ReaderOptions) -> RawSpectrum:
    """One spectrum from a table with one row per pixel (SDSS/BOSS). SDSS wavelengths are
    vacuum; the resolving power is the median of ``wdisp`` converted to λ/FWHM."""
    wave, flux, sigma, mask = columns.arrays(hdu.data)
    if columns.wave.upper() == "LOGLAM" and "COEFF0" in header and "COEFF1" in header:
        # loglam is stored as float32; the exact grid is COEFF0 + COEFF1 · i (log10 Å)
        exact = 10.0 ** (float(header["COEFF0"]) + float(header["COEFF1"]) *
                         np.arange(wave.size))
        if np.allclose(exact, wave, rtol=1e-6):
            wave = exact
    medium, stated = medium_of(header, options)
    if not stated and columns.wave.upper() == "LOGLAM":
        medium, stated = "vacuum", True  # SDSS/BOSS spectra are in vacuum
    resolving_power, fwhm = header_resolution(header)
    if resolving_power is None and fwhm is None and columns.dispersion is not None:
        resolving_power = _resolving_power_from_dispersion(hdu.data[columns.dispersion], wave)
    return RawSpectrum(
        spectrum_id=spectrum_id(header, source, options), wave=wave, flux=flux, sigma=sigma,
        mask=mask, wave_unit=columns.wave_unit, flux_unit=columns.flux_unit, medium=medium,
        medium_stated=stated, source=source, resolving_power=resolving_power, lsf_fwhm=fwhm,
        metadata=header_metadata(header, source), names=columns.names)


def _resolving_power_from_dispersion(wdisp: np.ndarray, wave: np.ndarray) -> float | None:
    """Median λ/FWHM from an LSF σ given in pixels of a log10 grid (step from ``wave``)."""
    wdisp = np.asarray(wdisp, dtype=np.float64)
    good = np.isfinite(wdisp) & (wdisp > 0)
    if good.sum() < 2:
        return None
    dloglam = float(np.median(np.diff(np.log10(wave))))
    fwhm_ln = FWHM_PER_SIGMA * np.median(wdisp[good]) * dloglam * np.log(10.0)
    return float(1.0 / fwhm_ln)


@dataclass
class _Arm:
    """One arm of a per-arm file: its pixels (λ in Å) and where they came from."""

    name: str
    wave: np.ndarray
    flux: np.ndarray
    sigma: np.ndarray | None
    mask: np.ndarray
    columns: _Columns
    header: fits.Header

    def redward_of(self, top: float) -> _Arm:
        """The arm's pixels above ``top`` Å, in increasing wavelength."""
        order = np.argsort(self.wave)
        keep = order[self.wave[order] > top]
        return _Arm(self.name, self.wave[keep], self.flux[keep],
                    None if self.sigma is None else self.sigma[keep], self.mask[keep],
                    self.columns, self.header)


def _join_arms(tables: list[fits.BinTableHDU], primary: fits.Header, source: str,
               options: ReaderOptions) -> RawSpectrum:
    """4MOST L1 per-arm file: one-row tables, one per arm, joined into one spectrum."""
    parts = []
    for hdu in tables:
        header = primary.copy()
        header.update(hdu.header)
        columns = _Columns.of(hdu, header, source)
        wave, flux, sigma, mask = columns.arrays(hdu.data[0])
        parts.append(_Arm(hdu.name or f"arm{len(parts)}", (wave * columns.wave_unit).to_value(
            u.AA), flux, sigma, np.zeros(wave.size, np.uint8) if mask is None else mask,
            columns, header))
    parts.sort(key=lambda arm: arm.wave.min())
    units = {str(arm.columns.flux_unit) for arm in parts}
    if len(units) > 1:
        raise SpectraError(f"the arms' flux units differ ({sorted(units)})", file=source,
                           field="TUNIT of FLUX")
    if any((arm.sigma is None) != (parts[0].sigma is None) for arm in parts):
        raise SpectraError("some arms have uncertainties and some do not", file=source,
                           field="ERR_FLUX")
    arms, top = [], -np.inf
    for part in parts:  # where arms overlap, the redder one starts after the bluer one
        arm = part.redward_of(top)
        if arm.wave.size == 0:
            raise SpectraError(f"arm {arm.name} lies inside the bluer arms", file=source,
                               field=arm.name)
        arms.append(arm)
        top = arm.wave[-1]
    first = parts[0]
    medium, stated = medium_of(first.header, options)
    resolving_power, fwhm = header_resolution(first.header)
    return RawSpectrum(
        spectrum_id=spectrum_id(primary, source, options),
        wave=np.concatenate([a.wave for a in arms]), flux=np.concatenate([a.flux for a in arms]),
        sigma=None if first.sigma is None else np.concatenate([a.sigma for a in arms]),
        mask=np.concatenate([a.mask for a in arms]), wave_unit=u.AA,
        flux_unit=first.columns.flux_unit, medium=medium, medium_stated=stated, source=source,
        resolving_power=resolving_power, lsf_fwhm=fwhm,
        arms=[(a.name, int(a.wave.size)) for a in arms],
        metadata=header_metadata(first.header, source),
        names={**first.columns.names, "wave": "WAVE of " + "+".join(a.name for a in arms)})
