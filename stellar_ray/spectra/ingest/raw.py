"""What a reader hands over: a spectrum as found in its file, or the reason it was set aside."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy import units as u

from ..grid import Medium

#: Canonical label names for the spellings found in grids and catalogs (lower case, no
#: brackets or underscores).
LABEL_ALIASES = {
    "teff": "teff", "t_eff": "teff", "temperature": "teff",
    "logg": "logg", "log_g": "logg", "gravity": "logg",
    "feh": "fe_h", "fe/h": "fe_h", "[fe/h]": "fe_h", "fe_h": "fe_h", "mh": "fe_h", "m/h": "fe_h",
    "[m/h]": "fe_h", "m_h": "fe_h", "metallicity": "fe_h",
    "alpha": "alpha_fe", "afe": "alpha_fe", "[a/fe]": "alpha_fe", "[alpha/fe]": "alpha_fe",
    "alpha_fe": "alpha_fe", "alpha/fe": "alpha_fe", "a_fe": "alpha_fe",
    "vmic": "vmic", "vturb": "vmic", "xi": "vmic", "microturbulence": "vmic",
    "vsini": "vsini", "vrot": "vsini",
}


def canonical_label(name: str) -> str:
    """A label name in stellar-ray's spelling: 'Teff' -> 'teff', '[Ca/Fe]' -> 'ca_fe'."""
    key = name.strip().lower()
    if key in LABEL_ALIASES:
        return LABEL_ALIASES[key]
    key = key.strip("[]").replace("/", "_").replace(" ", "_").replace("-", "_")
    return LABEL_ALIASES.get(key, key)


@dataclass
class RawSpectrum:
    """One spectrum as read: arrays in the file's own units and order.

    wave: (N,) in ``wave_unit``; flux: (N,) in ``flux_unit`` (None: take the dataset's);
    sigma: (N,) or None if the file has no uncertainties; mask: (N,) uint8 MaskBit flags.
    ``spectrum_id`` is the reader's id before ``--id-pattern``; ``id_suffix`` ('#row' in a
    multi-row file) is appended after it. ``noiseless``: the file says it holds model flux
    (None: it does not say). ``medium_stated``: False when ``medium`` is the assumed one.
    ``resolving_power`` (λ/FWHM) or ``lsf_fwhm`` (Å): the resolution the file states.
    ``arms``: (name, pixels) of the arms joined into this spectrum, in order.
    """

    spectrum_id: str
    wave: np.ndarray
    flux: np.ndarray
    sigma: np.ndarray | None
    mask: np.ndarray | None
    wave_unit: u.UnitBase
    flux_unit: u.UnitBase | None
    medium: Medium
    source: str
    row: int | None = None
    id_suffix: str = ""
    noiseless: bool | None = None
    medium_stated: bool = True
    resolving_power: float | None = None
    lsf_fwhm: float | None = None
    arms: list[tuple[str, int]] = field(default_factory=list)
    labels: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The file's own names for the arrays, used in error messages.
    names: dict[str, str] = field(
        default_factory=lambda: {"wave": "wave", "flux": "flux", "sigma": "sigma", "mask": "mask"})


@dataclass(frozen=True)
class Reject:
    """A spectrum (or a whole file, ``row=None``) set aside, and why."""

    file: str
    row: int | None
    spectrum_id: str | None
    field: str | None
    reason: str
