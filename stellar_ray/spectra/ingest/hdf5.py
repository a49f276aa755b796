"""HDF5 spectral grids: a wavelength array (L,), a flux array (N, L), a parameter table,
and optionally uncertainties (N, L). Names are found by the usual spellings or given in
:class:`ReaderOptions`."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import PurePosixPath

import h5py
import numpy as np

from ...errors import SpectraError
from ..units import parse_unit
from .ids import file_stem, row_suffix
from .options import ReaderOptions
from .raw import RawSpectrum, Reject, canonical_label

WAVE_NAMES = ("wave", "wavelength", "wavelengths", "lambda", "wl", "wav")
FLUX_NAMES = ("flux", "fluxes", "spectra", "spectrum", "spec")
SIGMA_NAMES = ("sigma", "error", "errors", "err", "flux_err")
PARAM_NAMES = ("params", "parameters", "labels", "param", "grid")


def _find(h5: h5py.File, given: str | None, names: tuple[str, ...], what: str, source: str,
          required: bool = True) -> h5py.Dataset | h5py.Group | None:
    if given:
        if given not in h5:
            raise SpectraError(f"no {what} at '{given}'", file=source, field=given)
        return h5[given]
    found: list[str] = []
    h5.visit(lambda name: found.append(name))
    for wanted in names:
        for name in found:
            if PurePosixPath(name).name.lower() == wanted:
                return h5[name]
    if required:
        raise SpectraError(f"no {what} (looked for {', '.join(names)}; name it with the "
                           f"hdf5 options)", file=source, field=what)
    return None


def _params(node: h5py.Dataset | h5py.Group, n: int, source: str) -> dict[str, np.ndarray]:
    """Parameter table -> {canonical label: (N,) array}: a compound dataset, a group of 1-D
    datasets, or a 2-D array with a 'names' (or 'columns') attribute."""
    if isinstance(node, h5py.Group):
        cols = {k: np.asarray(v[()]) for k, v in node.items() if isinstance(v, h5py.Dataset)}
    else:
        arr = node[()]
        if arr.dtype.names:
            cols = {k: np.asarray(arr[k]) for k in arr.dtype.names}
        else:
            names = node.attrs.get("names", node.attrs.get("columns"))
            if names is None or arr.ndim != 2:
                raise SpectraError("parameter array has no column names (attribute 'names')",
                                   file=source, field=node.name)
            names = [x.decode() if isinstance(x, bytes) else str(x) for x in names]
            cols = {k: arr[:, i] for i, k in enumerate(names)}
    out = {}
    for k, v in cols.items():
        if v.shape != (n,):
            raise SpectraError(f"parameter has shape {v.shape}, expected ({n},)", file=source,
                               field=k)
        if np.issubdtype(v.dtype, np.number):
            out[canonical_label(k)] = v.astype(np.float64)
    return out


def _attribute(h5: h5py.File, flux: h5py.Dataset, name: str):
    """An attribute of the flux dataset, else of the file, else None."""
    return flux.attrs.get(name, h5.attrs.get(name))


def read_hdf5(data: bytes, source: str, options: ReaderOptions,
              storage_options: dict | None = None) -> Iterator[RawSpectrum | Reject]:
    """Every spectrum of an HDF5 grid (raises :class:`SpectraError` for a bad file). A
    ``noiseless`` attribute (on the file or the flux dataset) says it holds model flux; a
    ``medium`` attribute on the wavelengths says air or vacuum; ``resolving_power`` or
    ``lsf_fwhm`` (Å) attributes give the resolution."""
    try:
        h5 = h5py.File(io.BytesIO(data), "r")
    except OSError as err:
        raise SpectraError(f"not a readable HDF5 file ({err})", file=source) from err
    with h5:
        wave_ds = _find(h5, options.hdf5_wave, WAVE_NAMES, "wavelength", source)
        flux_ds = _find(h5, options.hdf5_flux, FLUX_NAMES, "flux", source)
        sigma_ds = _find(h5, options.hdf5_sigma, SIGMA_NAMES, "sigma", source, required=False)
        param_node = _find(h5, options.hdf5_params, PARAM_NAMES, "parameters", source,
                           required=False)
        wave = np.asarray(wave_ds[()], dtype=np.float64).ravel()
        flux = np.asarray(flux_ds[()], dtype=np.float64)
        if flux.ndim == 1:
            flux = flux[None, :]
        n = flux.shape[0]
        sigma = None if sigma_ds is None else np.asarray(sigma_ds[()], dtype=np.float64)
        if sigma is not None and sigma.shape != flux.shape:
            raise SpectraError(f"shape {sigma.shape} differs from flux {flux.shape}",
                               file=source, field=sigma_ds.name)
        params = {} if param_node is None else _params(param_node, n, source)
        wave_unit = parse_unit(wave_ds.attrs.get("unit", wave_ds.attrs.get("units", "Angstrom")),
                               where=source, field=f"{wave_ds.name} unit", wavelength=True)
        flux_text = flux_ds.attrs.get("unit", flux_ds.attrs.get("units"))
        flux_unit = None if flux_text is None else parse_unit(
            flux_text, where=source, field=f"{flux_ds.name} unit")
        stated = "medium" in wave_ds.attrs
        medium = str(wave_ds.attrs.get("medium", options.assume_medium)).lower()
        medium = "air" if medium.startswith("air") else "vacuum"
        noiseless = _attribute(h5, flux_ds, "noiseless")
        resolving_power = _attribute(h5, flux_ds, "resolving_power")
        fwhm = _attribute(h5, flux_ds, "lsf_fwhm")
        ids = None
        if options.id_key and options.id_key in h5:
            ids = [x.decode() if isinstance(x, bytes) else str(x) for x in h5[options.id_key][()]]
        stem = file_stem(source)
        names = {"wave": wave_ds.name, "flux": flux_ds.name,
                 "sigma": "" if sigma_ds is None else sigma_ds.name, "mask": ""}
        for i in range(n):
            yield RawSpectrum(
                spectrum_id=ids[i] if ids else stem, id_suffix="" if ids else row_suffix(i, n),
                wave=wave, flux=flux[i], sigma=None if sigma is None else sigma[i], mask=None,
                wave_unit=wave_unit, flux_unit=flux_unit, medium=medium, medium_stated=stated,
                noiseless=None if noiseless is None else bool(noiseless),
                resolving_power=None if resolving_power is None else float(resolving_power),
                lsf_fwhm=None if fwhm is None else float(fwhm),
                source=f"{source}#{i}", row=i,
                labels={k: float(v[i]) for k, v in params.items()},
                metadata={"source": f"{source}#{i}"}, names=names,
            )
