"""NumPy (.npz) and CSV spectra.

``.npz``: arrays ``wave`` (N,) or (B, N), ``flux`` (N,) or (B, N), optional ``sigma``
(or ``ivar``), ``mask`` and ``ids``; scalar or (B,) arrays named like labels (``teff``,
``logg``, ``feh`` ...) become labels; optional scalars ``medium`` ('air'/'vacuum'),
``noiseless`` (model flux), ``resolving_power`` or ``lsf_fwhm`` (Å).

``.csv``: one spectrum per file with a header row naming the wavelength, flux and
(optional) error and mask columns. Units: Å and the dataset's flux unit unless
``wave_unit`` / ``flux_unit`` entries (npz) say otherwise.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from astropy import units as u

from ...errors import SpectraError
from ..units import parse_unit
from .ids import file_stem, row_suffix
from .options import ReaderOptions
from .pixels import mask_from_quality, sigma_and_mask_from_ivar
from .raw import LABEL_ALIASES, RawSpectrum, Reject, canonical_label

WAVE_KEYS = ("wave", "wavelength", "lambda", "wl")
FLUX_KEYS = ("flux",)
SIGMA_KEYS = ("sigma", "error", "err", "flux_err", "noise")
IVAR_KEYS = ("ivar", "invvar")
MASK_KEYS = ("mask", "qual", "quality")


def _pick(keys: list[str], wanted: tuple[str, ...]) -> str | None:
    lower = {k.lower(): k for k in keys}
    return next((lower[w] for w in wanted if w in lower), None)


def _sigma_and_mask(arrays, keys: list[str]
                    ) -> tuple[np.ndarray | None, np.ndarray | None, str, str]:
    """(sigma, mask, sigma's key, mask's key): pixels with ivar ≤ 0 are masked."""
    sigma = mask = None
    sk = mk = ""
    if (k := _pick(keys, SIGMA_KEYS)) is not None:
        sigma, sk = np.asarray(arrays[k], dtype=np.float64), k
    elif (k := _pick(keys, IVAR_KEYS)) is not None:
        (sigma, mask), sk = sigma_and_mask_from_ivar(arrays[k]), k
    if (k := _pick(keys, MASK_KEYS)) is not None:
        qual, mk = mask_from_quality(arrays[k]), k
        mask = qual if mask is None or mask.shape != qual.shape else mask | qual
    return sigma, mask, sk, mk


def _scalar(arrays, key: str, kind=float):
    return kind(arrays[key]) if key in arrays else None


def read_npz(data: bytes, source: str, options: ReaderOptions,
             storage_options: dict | None = None) -> Iterator[RawSpectrum | Reject]:
    try:
        arrays = dict(np.load(io.BytesIO(data), allow_pickle=False))
    except Exception as err:  # noqa: BLE001 - zip or format errors
        raise SpectraError(f"not a readable .npz file ({err})", file=source) from err
    keys = list(arrays)
    wk, fk = _pick(keys, WAVE_KEYS), _pick(keys, FLUX_KEYS)
    if wk is None or fk is None:
        raise SpectraError(f"needs arrays named one of {WAVE_KEYS} and 'flux'; has {keys}",
                           file=source, field="wave" if wk is None else "flux")
    flux = np.atleast_2d(np.asarray(arrays[fk], dtype=np.float64))
    b = flux.shape[0]
    wave = np.asarray(arrays[wk], dtype=np.float64)
    sigma, mask, sk, mk = _sigma_and_mask(arrays, keys)
    wave_unit = parse_unit(str(arrays.get("wave_unit", "Angstrom")), where=source,
                           field="wave_unit", wavelength=True)
    flux_unit: u.UnitBase | None = None
    if "flux_unit" in arrays:
        flux_unit = parse_unit(str(arrays["flux_unit"]), where=source, field="flux_unit")
    medium = str(arrays.get("medium", options.assume_medium))
    noiseless = _scalar(arrays, "noiseless", bool)
    ids = [str(x) for x in np.atleast_1d(arrays["ids"])] if "ids" in arrays else None
    label_keys = [k for k in keys if k.lower() in LABEL_ALIASES]
    names = {"wave": wk, "flux": fk, "sigma": sk, "mask": mk}

    def row_of(arr: np.ndarray | None, i: int) -> np.ndarray | None:
        if arr is None:
            return None
        return arr[i] if arr.ndim == 2 else arr

    for i in range(b):
        yield RawSpectrum(
            spectrum_id=ids[i] if ids else file_stem(source),
            id_suffix="" if ids else row_suffix(i, b),
            wave=row_of(wave, i), flux=flux[i], sigma=row_of(sigma, i), mask=row_of(mask, i),
            wave_unit=wave_unit, flux_unit=flux_unit,
            medium="air" if medium.startswith("air") else "vacuum",
            medium_stated="medium" in arrays, noiseless=noiseless,
            resolving_power=_scalar(arrays, "resolving_power"),
            lsf_fwhm=_scalar(arrays, "lsf_fwhm"),
            source=source if b == 1 else f"{source}#{i}", row=i,
            labels={canonical_label(k): float(np.atleast_1d(arrays[k])[i if np.size(
                arrays[k]) > 1 else 0]) for k in label_keys},
            metadata={"source": source if b == 1 else f"{source}#{i}"}, names=names,
        )


def read_csv(data: bytes, source: str, options: ReaderOptions,
             storage_options: dict | None = None) -> Iterator[RawSpectrum | Reject]:
    try:
        table: pa.Table = pacsv.read_csv(
            io.BytesIO(data), parse_options=pacsv.ParseOptions(delimiter=_delimiter(data)))
    except pa.ArrowInvalid as err:
        raise SpectraError(f"not a readable CSV file ({err})", file=source) from err
    keys = table.column_names
    wk, fk = _pick(keys, WAVE_KEYS), _pick(keys, FLUX_KEYS)
    if wk is None or fk is None:
        raise SpectraError(f"needs a header naming one of {WAVE_KEYS} and 'flux'; has {keys}",
                           file=source, field="wave" if wk is None else "flux")
    arrays = {k: table.column(k).to_numpy() for k in keys}
    for k in (wk, fk):
        if not np.issubdtype(arrays[k].dtype, np.number):
            raise SpectraError("column is not numeric", file=source, field=k)
    sigma, mask, sk, mk = _sigma_and_mask(arrays, keys)
    yield RawSpectrum(
        spectrum_id=file_stem(source), wave=arrays[wk].astype(np.float64),
        flux=arrays[fk].astype(np.float64), sigma=sigma, mask=mask, wave_unit=u.AA,
        flux_unit=None, medium=options.assume_medium, medium_stated=False, source=source,
        metadata={"source": source}, names={"wave": wk, "flux": fk, "sigma": sk, "mask": mk},
    )


def _delimiter(data: bytes) -> str:
    head = data[:4096].decode("utf-8", "replace").splitlines()[0] if data else ""
    return max((",", ";", "\t", " "), key=head.count)
