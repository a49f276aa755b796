"""Writing spectra as FITS files in the formats ingestion reads: ESO Phase 3 / 4MOST L1
style binary tables and 1-D images with a linear wavelength WCS. Used to export spectra
for other tools, by the demo and by the tests."""

from __future__ import annotations

import numpy as np
from astropy.io import fits


def phase3_hdul(wave_a: np.ndarray, flux: np.ndarray, err: np.ndarray, qual: np.ndarray,
                header: dict | None = None, flux_unit: str = "erg cm-2 s-1 Angstrom-1",
                medium: str = "vacuum") -> fits.HDUList:
    """One spectrum as a PHASE3SPECTRUM binary table with one row of array columns
    ``WAVE`` (Å), ``FLUX``, ``ERR_FLUX`` and ``QUAL`` (0 = good)."""
    n = len(wave_a)
    cols = [
        fits.Column(name="WAVE", format=f"{n}D", unit="Angstrom", array=[wave_a]),
        fits.Column(name="FLUX", format=f"{n}E", unit=flux_unit, array=[flux]),
        fits.Column(name="ERR_FLUX", format=f"{n}E", unit=flux_unit, array=[err]),
        fits.Column(name="QUAL", format=f"{n}J", array=[qual]),
    ]
    primary = fits.PrimaryHDU()
    for k, v in (header or {}).items():
        primary.header[k] = v
    primary.header["AIRORVAC"] = "air" if medium == "air" else "vac"
    table = fits.BinTableHDU.from_columns(cols, name="PHASE3SPECTRUM")
    return fits.HDUList([primary, table])


def image_hdul(flux: np.ndarray, crval_a: float, cdelt_a: float, err: np.ndarray | None = None,
               header: dict | None = None, flux_unit: str = "erg cm-2 s-1 Angstrom-1",
               log10: bool = False, medium: str = "vacuum") -> fits.HDUList:
    """One spectrum as a 1-D primary image with a linear (or, with ``log10``, DC-FLAG = 1
    log-linear) wavelength WCS, and its uncertainties in an ``ERR`` image extension."""
    primary = fits.PrimaryHDU(np.asarray(flux, dtype=np.float32))
    h = primary.header
    h["CRVAL1"], h["CDELT1"], h["CRPIX1"] = crval_a, cdelt_a, 1.0
    h["CTYPE1"] = ("AWAV" if medium == "air" else "WAVE") if not log10 else "LINEAR"
    h["CUNIT1"] = "Angstrom"
    h["DC-FLAG"] = 1 if log10 else 0
    if log10:
        h["AIRORVAC"] = "air" if medium == "air" else "vac"
    h["BUNIT"] = flux_unit
    for k, v in (header or {}).items():
        h[k] = v
    hdus = [primary]
    if err is not None:
        hdus.append(fits.ImageHDU(np.asarray(err, dtype=np.float32), name="ERR"))
    return fits.HDUList(hdus)
