"""Quantities every stage shares: the speed of light, the S/N window, and the stellar labels
stellar-ray knows by name with their default units.

Units of a dataset's labels are recorded in its manifest, and the artifact and the catalog
carry them on; :data:`LABEL_UNITS` is only the default for a label whose source did not say.
"""

from __future__ import annotations

import numpy as np
from astropy import constants

#: Speed of light in km/s.
C_KMS: float = constants.c.to_value("km/s")


def doppler_factor(rv_kms: np.ndarray | float) -> np.ndarray:
    """λ_observed / λ_rest = 1 + v/c for radial velocities in km/s (the classical factor
    every stage of stellar-ray uses, as survey pipelines do)."""
    return 1.0 + np.asarray(rv_kms, dtype=np.float64) / C_KMS


#: S/N is the median flux/σ per pixel over this window in Å (the 4MOST Galactic pipeline's).
SNR_WINDOW_A: tuple[float, float] = (6180.0, 6680.0)

#: Default unit of each label known by name (astropy strings; 'dex' for logarithmic ones).
LABEL_UNITS: dict[str, str] = {
    "teff": "K", "logg": "dex", "fe_h": "dex", "m_h": "dex", "alpha_fe": "dex",
    "alpha_m": "dex", "ca_fe": "dex", "mg_fe": "dex", "li_fe": "dex", "vmic": "km/s",
    "vmac": "km/s", "vsini": "km/s", "rv": "km/s",
}


def default_unit(label: str) -> str | None:
    """The unit of ``label`` when its source names none (None for unknown labels)."""
    return LABEL_UNITS.get(label)


def snr_window(wave_a: np.ndarray) -> np.ndarray:
    """Boolean (L,) selecting the S/N window's pixels, or every pixel when the grid misses it
    (fewer than 10 pixels inside)."""
    wave_a = np.asarray(wave_a)
    sel = (wave_a >= SNR_WINDOW_A[0]) & (wave_a <= SNR_WINDOW_A[1])
    return sel if sel.sum() >= 10 else np.ones_like(sel)


def measured_snr(flux: np.ndarray, sigma: np.ndarray, wave_a: np.ndarray) -> np.ndarray:
    """(B,) median flux/σ per spectrum over the S/N window, finite positive σ only;
    flux and sigma (B, L) on ``wave_a`` (L,) in Å."""
    win = snr_window(wave_a)
    f, s = np.asarray(flux)[:, win], np.asarray(sigma)[:, win]
    ratio = np.where(np.isfinite(s) & (s > 0), f / np.where(s > 0, s, 1.0), np.nan)
    return np.nanmedian(ratio, axis=1)
