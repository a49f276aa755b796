"""FITS spectra: 1-D images with a wavelength WCS, and ESO Phase 3 / 4MOST L1 style binary
tables with array columns (``WAVE``, ``FLUX``, ``ERR_FLUX``, ``QUAL``)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import PurePosixPath

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from ...errors import SpectraError
from ..schema import MaskBit
from ..units import parse_unit
from .options import ReaderOptions
from .raw import RawSpectrum, Reject

WAVE_COLUMNS = ("WAVE", "WAVELENGTH", "LAMBDA", "LOGLAM")
FLUX_COLUMNS = ("FLUX", "FLUX_REDUCED", "SPEC")
SIGMA_COLUMNS = ("ERR_FLUX", "ERR", "ERROR", "SIGMA", "FLUX_ERR", "NOISE")
IVAR_COLUMNS = ("IVAR", "INVVAR", "ERR_IVAR")
VAR_COLUMNS = ("VAR", "VARIANCE")
QUAL_COLUMNS = ("QUAL", "QUALITY", "MASK", "AND_MASK")

_HEADER_METADATA = {"ra": ("RA", "RA_OBJ"), "dec": ("DEC", "DEC_OBJ"),
                    "snr": ("SNR", "SN_MEDIAN"), "object": ("OBJECT", "OBJ_NAME")}


def read_fits(data: bytes, source: str, options: ReaderOptions
              ) -> Iterator[RawSpectrum | Reject]:
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
        for hdu in hdul:
            if isinstance(hdu, fits.BinTableHDU) and _find(hdu.columns.names, FLUX_COLUMNS):
                yield from _read_table(hdu, hdul[0].header, source, options)
                return
        image = next((h for h in hdul if h.is_image and h.data is not None
                      and h.data.ndim == 1), None)
        if image is None:
            raise SpectraError("no 1-D spectrum image and no binary table with a FLUX column",
                               file=source)
        yield _read_image(image, hdul, source, options)


def _find(names: list[str], wanted: tuple[str, ...]) -> str | None:
    upper = {n.upper(): n for n in names}
    return next((upper[w] for w in wanted if w in upper), None)


def _medium(header: fits.Header, options: ReaderOptions) -> str:
    ctype = str(header.get("CTYPE1", "")).upper()
    if ctype.startswith("AWAV"):
        return "air"
    flag = str(header.get("AIRORVAC", header.get("VACUUM", ""))).strip().lower()
    if flag in ("air", "f", "false"):
        return "air"
    if flag in ("vac", "vacuum", "t", "true"):
        return "vacuum"
    if ctype.startswith("WAVE"):
        return "vacuum"
    return options.assume_medium


def _metadata(header: fits.Header, source: str) -> dict:
    meta = {"source": source}
    for name, keys in _HEADER_METADATA.items():
        for k in keys:
            if k in header and header[k] not in (None, ""):
                meta[name] = header[k]
                break
    return meta


def _spectrum_id(header: fits.Header, source: str, row: int | None, nrows: int,
                 options: ReaderOptions, table_row=None) -> str:
    if options.id_key:
        if table_row is not None and options.id_key in table_row.array.names:
            return str(table_row[options.id_key]).strip()
        if options.id_key in header:
            value = str(header[options.id_key]).strip()
            return value if nrows == 1 else f"{value}#{row}"
        raise SpectraError("id keyword not in the header or table", file=source,
                           field=options.id_key)
    stem = PurePosixPath(source.split("://")[-1]).name.split(".")[0]
    return stem if nrows == 1 else f"{stem}#{row}"


def wcs_wavelength(header: fits.Header, npix: int, source: str) -> np.ndarray:
    """Pixel-centre wavelengths from a 1-D linear or log-linear WCS (CRVAL1, CDELT1 or CD1_1,
    CRPIX1, DC-FLAG or CTYPE1 = '...-LOG'), in the header's CUNIT1 (Å if absent)."""
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
    if int(header.get("DC-FLAG", 0)) == 1:
        return 10.0 ** coord
    if str(header.get("CTYPE1", "")).upper().endswith("-LOG"):
        # FITS WCS paper III logarithmic axis: λ = CRVAL · exp((λ_lin − CRVAL) / CRVAL)
        return crval * np.exp((coord - crval) / crval)
    return coord


def _named_image(hdul: fits.HDUList, names: tuple[str, ...]) -> np.ndarray | None:
    for hdu in hdul[1:]:
        if hdu.is_image and hdu.name.upper() in names and hdu.data is not None:
            return np.asarray(hdu.data, dtype=np.float64).ravel()
    return None


def _read_image(image: fits.ImageHDU, hdul: fits.HDUList, source: str,
                options: ReaderOptions) -> RawSpectrum:
    header = hdul[0].header.copy()
    header.update(image.header)
    flux = np.asarray(image.data, dtype=np.float64)
    wave = wcs_wavelength(header, flux.size, source)
    sigma = _named_image(hdul, SIGMA_COLUMNS)
    if sigma is None and (ivar := _named_image(hdul, IVAR_COLUMNS)) is not None:
        sigma = _sigma_from_ivar(ivar)
    if sigma is None and (var := _named_image(hdul, VAR_COLUMNS)) is not None:
        sigma = np.sqrt(np.where(var > 0, var, np.nan))
    qual = _named_image(hdul, QUAL_COLUMNS)
    return RawSpectrum(
        spectrum_id=_spectrum_id(header, source, None, 1, options),
        wave=wave, flux=flux, sigma=sigma,
        mask=None if qual is None else _mask_from_quality(qual),
        wave_unit=parse_unit(header.get("CUNIT1", "Angstrom"), where=source, field="CUNIT1",
                             wavelength=True),
        flux_unit=_optional_unit(header.get("BUNIT"), source, "BUNIT"),
        medium=_medium(header, options), source=source, metadata=_metadata(header, source),
        names={"wave": "WCS (CRVAL1/CDELT1)", "flux": f"HDU {image.name or 0}",
               "sigma": "error HDU", "mask": "quality HDU"},
    )


def _optional_unit(text: str | None, source: str, field: str) -> u.UnitBase | None:
    return None if text is None else parse_unit(text, where=source, field=field)


def _sigma_from_ivar(ivar: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), np.inf)


def _mask_from_quality(qual: np.ndarray) -> np.ndarray:
    """Any non-zero quality value marks a bad pixel (ESO Phase 3: QUAL = 0 is good)."""
    return np.where(np.asarray(qual) != 0, np.uint8(MaskBit.BAD_PIXEL), np.uint8(0))


def _read_table(hdu: fits.BinTableHDU, primary: fits.Header, source: str,
                options: ReaderOptions) -> Iterator[RawSpectrum | Reject]:
    names = hdu.columns.names
    header = primary.copy()
    header.update(hdu.header)
    wave_col = _find(names, WAVE_COLUMNS)
    flux_col = _find(names, FLUX_COLUMNS)
    if wave_col is None:
        raise SpectraError(f"no wavelength column (looked for {', '.join(WAVE_COLUMNS)})",
                           file=source, field="WAVE")
    sigma_col = _find(names, SIGMA_COLUMNS)
    ivar_col = None if sigma_col else _find(names, IVAR_COLUMNS)
    qual_col = _find(names, QUAL_COLUMNS)

    def unit_of(col: str, wavelength: bool = False) -> u.UnitBase | None:
        text = hdu.columns[col].unit
        if text is None:
            return u.AA if wavelength else None
        return parse_unit(text, where=source, field=f"TUNIT of {col}", wavelength=wavelength)

    wave_unit = unit_of(wave_col, wavelength=True) if wave_col.upper() != "LOGLAM" else u.AA
    flux_unit = unit_of(flux_col)
    medium = _medium(header, options)
    nrows = len(hdu.data)
    for row in range(nrows):
        rec = hdu.data[row]
        wave = np.asarray(rec[wave_col], dtype=np.float64).ravel()
        if wave_col.upper() == "LOGLAM":
            wave = 10.0 ** wave
        flux = np.asarray(rec[flux_col], dtype=np.float64).ravel()
        if sigma_col:
            sigma = np.asarray(rec[sigma_col], dtype=np.float64).ravel()
        elif ivar_col:
            sigma = _sigma_from_ivar(np.asarray(rec[ivar_col], dtype=np.float64).ravel())
        else:
            sigma = None
        mask = None if qual_col is None else _mask_from_quality(np.ravel(rec[qual_col]))
        try:
            sid = _spectrum_id(header, source, row, nrows, options, table_row=rec)
        except SpectraError as err:
            yield Reject(source, row, None, err.field, err.reason)
            continue
        yield RawSpectrum(
            spectrum_id=sid, wave=wave, flux=flux, sigma=sigma, mask=mask,
            wave_unit=wave_unit, flux_unit=flux_unit, medium=medium,
            source=source if nrows == 1 else f"{source}#{row}", row=row,
            metadata=_metadata(header, source if nrows == 1 else f"{source}#{row}"),
            names={"wave": wave_col, "flux": flux_col, "sigma": sigma_col or ivar_col or "",
                   "mask": qual_col or ""},
        )
