"""PHOENIX-ACES model spectra (Husser et al. 2013): each flux file is a 1-D primary image
(``BUNIT`` erg/s/cm²/cm) whose header gives the model's parameters (``PHXTEFF``,
``PHXLOGG``, ``PHXM_H``, ``PHXALPHA``); the wavelengths (vacuum, Å) are in a separate file,
``WAVE_PHOENIX-ACES-AGSS-COND-2011.fits``, found beside the flux files unless
``reader.phoenix_wave`` names it. Model spectra are noiseless.
"""

from __future__ import annotations

import functools
import io
import json

import numpy as np
from astropy.io import fits

from ...errors import SpectraError
from ..storage import read_bytes, resolve
from ..units import parse_unit
from .fits_header import spectrum_id
from .options import ReaderOptions
from .raw import RawSpectrum

WAVE_FILE = "WAVE_PHOENIX-ACES-AGSS-COND-2011.fits"
#: Header keyword -> label. PHOENIX scales all metals together, so its [M/H] is [Fe/H],
#: and [α/M] is [α/Fe].
LABEL_KEYWORDS = {"PHXTEFF": "teff", "PHXLOGG": "logg", "PHXM_H": "fe_h",
                  "PHXALPHA": "alpha_fe"}
#: Husser et al. 2013: the HiRes spectra have R = 500,000 in the optical and near-IR.
RESOLVING_POWER = 500_000.0


def is_phoenix(header: fits.Header) -> bool:
    return "PHXTEFF" in header


def is_wavelength_file(path: str) -> bool:
    """The PHOENIX wavelength file is not a spectrum."""
    return path.rsplit("/", 1)[-1].upper().startswith("WAVE_PHOENIX")


def wavelength_url(source: str, options: ReaderOptions) -> str:
    """Where the wavelengths of flux file ``source`` are."""
    if options.phoenix_wave:
        return options.phoenix_wave
    return source.rsplit("/", 1)[0] + "/" + WAVE_FILE if "/" in source else WAVE_FILE


@functools.lru_cache(maxsize=4)
def _wavelengths(url: str, storage_json: str) -> np.ndarray:
    """The wavelength file's (N,) vacuum wavelengths in Å (read once per process)."""
    fs, path = resolve(url, json.loads(storage_json))
    try:
        data = read_bytes(fs, path)
    except FileNotFoundError as err:
        raise SpectraError(f"PHOENIX wavelength file not found (put {WAVE_FILE} beside the "
                           "flux files or name it with reader.phoenix_wave)", file=url) from err
    with fits.open(io.BytesIO(data), memmap=False) as hdul:
        header, wave = hdul[0].header, np.asarray(hdul[0].data, dtype=np.float64).ravel()
    unit = parse_unit(header.get("UNIT", header.get("BUNIT", "Angstrom")), where=url,
                      field="UNIT", wavelength=True)
    return (wave * unit).to("Angstrom").value


def read_phoenix(hdul: fits.HDUList, source: str, options: ReaderOptions,
                 storage_options: dict | None = None) -> RawSpectrum:
    header = hdul[0].header
    flux = np.asarray(hdul[0].data, dtype=np.float64).ravel()
    url = wavelength_url(source, options)
    wave = _wavelengths(url, json.dumps(storage_options or {}, sort_keys=True))
    if wave.size != flux.size:
        raise SpectraError(f"{flux.size} flux values but {wave.size} wavelengths in {url}",
                           file=source, field="PRIMARY")
    labels = {label: float(header[k]) for k, label in LABEL_KEYWORDS.items() if k in header}
    return RawSpectrum(
        spectrum_id=spectrum_id(header, source, options), wave=wave, flux=flux, sigma=None,
        mask=None, wave_unit=parse_unit("Angstrom", where=url, field="UNIT", wavelength=True),
        flux_unit=parse_unit(header.get("BUNIT", "erg/s/cm^2/cm"), where=source,
                             field="BUNIT"),
        medium="vacuum", source=source, noiseless=True, resolving_power=RESOLVING_POWER,
        labels=labels, metadata={"source": source},
        names={"wave": url, "flux": "PRIMARY", "sigma": "", "mask": ""})
