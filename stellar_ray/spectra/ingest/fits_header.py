"""What FITS headers say about a spectrum: its id, wavelength medium, resolution and the
standard metadata (position, S/N, object name)."""

from __future__ import annotations

from astropy.io import fits

from ...errors import SpectraError
from ..grid import Medium
from .ids import file_stem
from .options import ReaderOptions

_HEADER_METADATA = {"ra": ("RA", "RA_OBJ", "PLUG_RA"), "dec": ("DEC", "DEC_OBJ", "PLUG_DEC"),
                    "snr": ("SNR", "SN_MEDIAN"), "object": ("OBJECT", "OBJ_NAME", "OBJID")}
#: Keywords giving the resolving power λ/Δλ (ESO Phase 3 SPEC_RES first) ...
RESOLVING_POWER_KEYS = ("SPEC_RES", "RESOLUTN", "RESOLVPW", "R_POWER")
#: ... or the line-spread function's FWHM in Å.
FWHM_KEYS = ("LSF_FWHM", "FWHM_LSF", "FWHM")


def medium_of(header: fits.Header, options: ReaderOptions) -> tuple[Medium, bool]:
    """(medium, stated): from CTYPE1 (AWAV/WAVE) or AIRORVAC/VACUUM, else the assumed one
    with ``stated=False``."""
    ctype = str(header.get("CTYPE1", "")).upper()
    if ctype.startswith("AWAV"):
        return "air", True
    flag = str(header.get("AIRORVAC", header.get("VACUUM", ""))).strip().lower()
    if flag in ("air", "f", "false"):
        return "air", True
    if flag in ("vac", "vacuum", "t", "true"):
        return "vacuum", True
    if ctype.startswith("WAVE"):
        return "vacuum", True
    return options.assume_medium, False


def header_resolution(header: fits.Header) -> tuple[float | None, float | None]:
    """(resolving power, LSF FWHM in Å) stated by the header, each None if absent."""
    def positive(keys: tuple[str, ...]) -> float | None:
        for k in keys:
            try:
                value = float(header[k])
            except (KeyError, TypeError, ValueError):
                continue
            if value > 0:
                return value
        return None

    return positive(RESOLVING_POWER_KEYS), positive(FWHM_KEYS)


def header_metadata(header: fits.Header, source: str) -> dict:
    meta: dict = {"source": source}
    for name, keys in _HEADER_METADATA.items():
        for k in keys:
            if k in header and header[k] not in (None, ""):
                meta[name] = header[k]
                break
    return meta


def spectrum_id(header: fits.Header, source: str, options: ReaderOptions) -> str:
    """The id before ``--id-pattern``: the ``--id-key`` header keyword, else the file name
    without its extension."""
    if options.id_key:
        if options.id_key not in header:
            raise SpectraError("id keyword not in the header or table", file=source,
                               field=options.id_key)
        return str(header[options.id_key]).strip()
    return file_stem(source)
