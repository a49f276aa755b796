"""Units at the boundary: wavelength and flux units read from files, through astropy, and
the air ↔ vacuum wavelength conversion.

Inside stellar-ray wavelengths are Å; flux is in the dataset's ``flux_unit`` (an astropy
unit string, '' for normalised flux).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
from astropy import units as u

from ..errors import SpectraError

#: Spellings found in real FITS headers that astropy does not read as meant.
_WAVE_ALIASES = {"a": "Angstrom", "aa": "Angstrom", "ang": "Angstrom", "angstroms": "Angstrom",
                 "angstrom": "Angstrom", "nanometer": "nm", "micron": "um", "microns": "um"}


def parse_unit(text: str | None, *, where: str, field: str, wavelength: bool = False
               ) -> u.UnitBase:
    """An astropy unit from a header or attribute string; '' or None is dimensionless.

    Raises :class:`SpectraError` naming ``where`` and ``field`` for anything astropy cannot
    read.
    """
    raw = (text or "").strip()
    if raw.lower() in ("", "none", "normalized", "normalised", "relative", "arbitrary"):
        return u.dimensionless_unscaled
    cleaned = raw
    if wavelength:
        cleaned = _WAVE_ALIASES.get(raw.lower(), raw)
    else:
        cleaned = _tidy_flux_unit(raw)
        # 'erg/s/cm2/A' means per Ångström, not per Ampere.
        for tail in ("/A", "/AA", "/Ang"):
            if cleaned.endswith(tail):
                cleaned = cleaned[: -len(tail)] + "/Angstrom"
    for fmt in ("fits", "generic"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", u.UnitsWarning)  # 'erg/s/cm2/Å' is common
                unit = u.Unit(cleaned, format=fmt)
            break
        except ValueError:
            continue
    else:
        raise SpectraError(f"unknown unit '{raw}'", file=where, field=field)
    if wavelength and unit.physical_type != "length":
        raise SpectraError(f"unit '{raw}' is not a wavelength unit", file=where, field=field)
    return unit


def _tidy_flux_unit(text: str) -> str:
    """Survey spellings astropy does not read: APOGEE's 'Flux (10^-17 erg/s/cm^2/Ang)' and
    SDSS's '1E-17 erg/cm^2/s/Ang' -> '1e-17 erg/s/cm2/Ang'."""
    inside = re.search(r"\(([^()]*)\)\s*$", text)
    if inside and re.search(r"[a-zA-Z]", inside.group(1)):
        text = inside.group(1)
    text = re.sub(r"10\^\(?([+-]?\d+)\)?", r"1e\1", text)
    return text.replace("^", "").strip()


def to_angstrom(wave: np.ndarray, unit: u.UnitBase) -> np.ndarray:
    """Wavelengths in ``unit`` -> Å (float64)."""
    return (np.asarray(wave, dtype=np.float64) * unit).to_value(u.AA)


def convert_flux(flux: np.ndarray, sigma: np.ndarray | None, unit: u.UnitBase,
                 target: u.UnitBase, wave_a: np.ndarray, *, where: str
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Flux and sigma from ``unit`` to ``target``, per pixel (wavelengths ``wave_a`` in Å, for
    conversions between per-frequency and per-wavelength densities)."""
    if unit == target:
        return flux, sigma
    try:
        scale = (1.0 * unit).to_value(target, equivalencies=u.spectral_density(wave_a * u.AA))
    except u.UnitConversionError as err:
        raise SpectraError(f"flux unit '{unit}' cannot be converted to the dataset's "
                           f"'{target}'", file=where, field="flux") from err
    return flux * scale, None if sigma is None else sigma * np.abs(scale)


def vacuum_to_air(wave_a: np.ndarray) -> np.ndarray:
    """Vacuum -> air wavelengths (Å), IAU standard (Morton 2000); unchanged below 2000 Å."""
    w = np.asarray(wave_a, dtype=np.float64)
    s2 = (1e4 / w) ** 2
    n = 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)
    return np.where(w > 2000.0, w / n, w)


def air_to_vacuum(wave_a: np.ndarray) -> np.ndarray:
    """Air -> vacuum wavelengths (Å), the inverse of :func:`vacuum_to_air` (Piskunov's fit);
    unchanged below 2000 Å."""
    w = np.asarray(wave_a, dtype=np.float64)
    s2 = (1e4 / w) ** 2
    n = (1.0 + 8.336624212083e-5 + 2.408926869968e-2 / (130.1065924522 - s2)
         + 1.599740894897e-4 / (38.92568793293 - s2))
    return np.where(w > 2000.0, w * n, w)
