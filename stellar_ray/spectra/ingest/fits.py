"""FITS spectra, by layout (the first that fits):

- PHOENIX-ACES flux files (``PHXTEFF`` in the primary header; wavelengths from the separate
  ``WAVE_PHOENIX-ACES-AGSS-COND-2011.fits``): see :mod:`.phoenix`;
- binary tables (ESO Phase 3, 4MOST L1 per-arm, SDSS/BOSS): see :mod:`.fits_tables`;
- APOGEE apStar-style images: flux, error and mask as 2-D images in HDUs 1, 2, 3 (row 0 is
  the combined spectrum), log-linear WCS;
- a 1-D image with a linear or log-linear wavelength WCS, uncertainties (``ERR``, ``IVAR``
  or ``VAR``) and quality in named image extensions.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from ...errors import SpectraError
from ..units import parse_unit
from .fits_header import header_metadata, header_resolution, medium_of, spectrum_id
from .fits_tables import FLUX_COLUMNS, find_column, read_tables
from .options import ReaderOptions
from .phoenix import is_phoenix, read_phoenix
from .pixels import mask_from_quality, sigma_and_mask_from_ivar
from .raw import RawSpectrum, Reject

SIGMA_HDUS = ("ERR_FLUX", "ERR", "ERROR", "SIGMA", "FLUX_ERR", "NOISE")
IVAR_HDUS = ("IVAR", "INVVAR", "ERR_IVAR")
VAR_HDUS = ("VAR", "VARIANCE")
QUAL_HDUS = ("QUAL", "QUALITY", "MASK", "AND_MASK")

#: APOGEE APOGEE_PIXMASK bits that make a pixel unusable: BADPIX, CRPIX, SATPIX,
#: UNFIXABLE, BADDARK, BADFLAT, BADERR, NOSKY (bits 0-7) and NOT_ENOUGH_PSF (bit 14).
APOGEE_BAD_BITS = 16639
#: APOGEE's resolving power (Majewski et al. 2017: R ≈ 22,500).
APOGEE_RESOLVING_POWER = 22_500.0


def read_fits(data: bytes, source: str, options: ReaderOptions,
              storage_options: dict | None = None) -> Iterator[RawSpectrum | Reject]:
    """Every spectrum in a FITS file (raises :class:`SpectraError` for a bad file)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", AstropyUserWarning)  # truncation is an error here
            hdul = fits.open(io.BytesIO(data), memmap=False, lazy_load_hdus=False)
            for hdu in hdul:
                _ = hdu.data  # force reading so truncation surfaces now
    except Exception as err:  # noqa: BLE001 - any astropy failure means an unreadable file
        raise SpectraError(f"not a readable FITS file ({err})", file=source) from err
    with hdul:
        if is_phoenix(hdul[0].header):
            yield read_phoenix(hdul, source, options, storage_options)
            return
        tables = [h for h in hdul if isinstance(h, fits.BinTableHDU)
                  and find_column(h.columns.names, FLUX_COLUMNS)]
        if tables:
            yield from read_tables(tables, hdul[0].header, source, options)
            return
        stacked = _apstar_images(hdul)
        if stacked is not None:
            yield _read_apstar(stacked, hdul, source, options)
            return
        image = next((h for h in hdul if h.is_image and h.data is not None
                      and h.data.ndim == 1), None)
        if image is None:
            raise SpectraError("no 1-D spectrum image, no apStar-style image stack and no "
                               "binary table with a FLUX column", file=source)
        yield _read_image(image, hdul, source, options)


def wcs_wavelength(header: fits.Header, npix: int, source: str) -> np.ndarray:
    """Pixel-centre wavelengths from a 1-D linear or log-linear WCS (CRVAL1, CDELT1 or CD1_1,
    CRPIX1, DC-FLAG = 1 or CTYPE1 = 'LOG-LINEAR' for log10 λ, CTYPE1 = '...-LOG' for FITS
    paper III), in the header's CUNIT1 (Å if absent)."""
    if "CRVAL1" not in header:
        raise SpectraError("no wavelength solution (CRVAL1 missing)", file=source,
                           field="CRVAL1")
    step = header.get("CDELT1", header.get("CD1_1"))
    if step is None:
        raise SpectraError("no wavelength step (neither CDELT1 nor CD1_1)", file=source,
                           field="CDELT1")
    crval, crpix = float(header["CRVAL1"]), float(header.get("CRPIX1", 1.0))
    pix = np.arange(1, npix + 1, dtype=np.float64)
    coord = crval + float(step) * (pix - crpix)
    ctype = str(header.get("CTYPE1", "")).upper()
    if int(header.get("DC-FLAG", 0)) == 1 or ctype == "LOG-LINEAR":
        return 10.0 ** coord
    if ctype.endswith("-LOG"):
        # FITS WCS paper III logarithmic axis: λ = CRVAL · exp((λ_lin − CRVAL) / CRVAL)
        return crval * np.exp((coord - crval) / crval)
    return coord


def _named_image(hdul: fits.HDUList, names: tuple[str, ...]) -> np.ndarray | None:
    for hdu in hdul[1:]:
        if hdu.is_image and hdu.name.upper() in names and hdu.data is not None:
            return np.asarray(hdu.data, dtype=np.float64).ravel()
    return None


def optional_unit(text: str | None, source: str, field: str) -> u.UnitBase | None:
    return None if text is None else parse_unit(text, where=source, field=field)


def _read_image(image: fits.ImageHDU, hdul: fits.HDUList, source: str,
                options: ReaderOptions) -> RawSpectrum:
    header = hdul[0].header.copy()
    header.update(image.header)
    flux = np.asarray(image.data, dtype=np.float64)
    wave = wcs_wavelength(header, flux.size, source)
    sigma = _named_image(hdul, SIGMA_HDUS)
    mask = None
    if sigma is None and (ivar := _named_image(hdul, IVAR_HDUS)) is not None:
        sigma, mask = sigma_and_mask_from_ivar(ivar)
    if sigma is None and (var := _named_image(hdul, VAR_HDUS)) is not None:
        sigma = np.sqrt(np.where(var > 0, var, np.nan))
    if (qual := _named_image(hdul, QUAL_HDUS)) is not None:
        mask = mask_from_quality(qual) if mask is None else mask | mask_from_quality(qual)
    medium, stated = medium_of(header, options)
    resolving_power, fwhm = header_resolution(header)
    return RawSpectrum(
        spectrum_id=spectrum_id(header, source, options),
        wave=wave, flux=flux, sigma=sigma, mask=mask,
        wave_unit=parse_unit(header.get("CUNIT1", "Angstrom"), where=source, field="CUNIT1",
                             wavelength=True),
        flux_unit=optional_unit(header.get("BUNIT"), source, "BUNIT"),
        medium=medium, medium_stated=stated, source=source,
        resolving_power=resolving_power, lsf_fwhm=fwhm,
        metadata=header_metadata(header, source),
        names={"wave": "WCS (CRVAL1/CDELT1)", "flux": f"HDU {image.name or 0}",
               "sigma": "error HDU", "mask": "quality HDU"},
    )


def _apstar_images(hdul: fits.HDUList) -> list[fits.ImageHDU] | None:
    """HDUs 1-3 of an apStar-style file (flux, error, mask images of one shape, the primary
    without data), else None."""
    if len(hdul) < 4 or hdul[0].data is not None:
        return None
    flux, err, mask = hdul[1], hdul[2], hdul[3]
    if not all(h.is_image and h.data is not None for h in (flux, err, mask)):
        return None
    if flux.data.ndim not in (1, 2) or err.data.shape != flux.data.shape or \
            mask.data.shape != flux.data.shape:
        return None
    return [flux, err, mask]


def _read_apstar(images: list[fits.ImageHDU], hdul: fits.HDUList, source: str,
                 options: ReaderOptions) -> RawSpectrum:
    """The combined spectrum (row 0) of an apStar-style file (``images``: its flux, error and
    mask HDUs): vacuum wavelengths (APOGEE's) unless the header says otherwise, APOGEE
    pixel-mask bits for bad pixels."""
    flux_hdu, err_hdu, mask_hdu = images
    header = hdul[0].header.copy()
    header.update(flux_hdu.header)

    def first_row(hdu: fits.ImageHDU) -> np.ndarray:
        return np.atleast_2d(np.asarray(hdu.data))[0]

    flux = first_row(flux_hdu).astype(np.float64)
    wave = wcs_wavelength(header, flux.size, source)
    medium, stated = medium_of(header, options)
    resolving_power, fwhm = header_resolution(header)
    if str(header.get("TELESCOP", "")).lower().startswith(("apo", "lco")):  # APOGEE itself
        if not stated:
            medium, stated = "vacuum", True
        if resolving_power is None and fwhm is None:
            resolving_power = APOGEE_RESOLVING_POWER
    return RawSpectrum(
        spectrum_id=spectrum_id(header, source, options),
        wave=wave, flux=flux, sigma=first_row(err_hdu).astype(np.float64),
        mask=mask_from_quality(first_row(mask_hdu), APOGEE_BAD_BITS),
        wave_unit=parse_unit(header.get("CUNIT1", "Angstrom"), where=source, field="CUNIT1",
                             wavelength=True),
        flux_unit=optional_unit(header.get("BUNIT"), source, "BUNIT of HDU 1"),
        medium=medium, medium_stated=stated, source=source,
        resolving_power=resolving_power, lsf_fwhm=fwhm, metadata=header_metadata(header, source),
        names={"wave": "WCS of HDU 1", "flux": "HDU 1 row 0", "sigma": "HDU 2 row 0",
               "mask": "HDU 3 row 0"},
    )
