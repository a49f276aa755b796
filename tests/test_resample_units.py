"""Flux-conserving resampling, units and the air/vacuum conversion."""

import numpy as np
import pytest
from astropy import units as u

from stellar_ray.errors import SpectraError
from stellar_ray.spectra.resample import Resampler, bin_edges
from stellar_ray.spectra.schema import MaskBit
from stellar_ray.spectra.units import (
    air_to_vacuum,
    convert_flux,
    parse_unit,
    vacuum_to_air,
)


def _integral(edges, flux, lo, hi):
    """∫ flux dλ over [lo, hi] for a piecewise-constant flux on bins with ``edges``."""
    overlap = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0, None)
    return float((flux * overlap).sum())


def test_resampling_conserves_flux():
    rng = np.random.default_rng(3)
    w_in = np.cumsum(rng.uniform(0.2, 0.4, 2000)) + 4000.0
    f_in = 1.0 + 0.5 * np.sin(w_in / 3.0) + rng.normal(0, 0.01, w_in.size)
    w_out = np.linspace(4100.0, 4500.0, 577)
    r = Resampler.between(w_in, w_out)
    f_out, s_out, m_out = r.apply(f_in, np.full_like(f_in, 0.01), np.zeros(w_in.size, np.uint8))
    e_out = bin_edges(w_out)
    assert (m_out == 0).all()
    want = _integral(bin_edges(w_in), f_in, e_out[0], e_out[-1])
    got = float((f_out.astype(np.float64) * np.diff(e_out)).sum())
    assert got == pytest.approx(want, rel=1e-6)


def test_resampling_onto_the_same_grid_is_the_identity():
    w = np.linspace(5000, 5100, 201)
    f = np.random.default_rng(0).normal(1, 0.1, w.size)
    s = np.full_like(f, 0.1)
    f_out, s_out, _ = Resampler.between(w, w).apply(f, s, np.zeros(w.size, np.uint8))
    assert np.allclose(f_out, f, rtol=1e-6) and np.allclose(s_out, s, rtol=1e-6)


def test_resampling_propagates_noise_of_binned_pixels():
    w_in = np.arange(1000) * 0.1 + 5000.0
    w_out = w_in[2::4][:-1] + 0.15  # every output bin covers exactly 4 input bins
    f, s = np.ones(w_in.size), np.full(w_in.size, 0.2)
    _, s_out, _ = Resampler.between(w_in, w_out).apply(f, s, np.zeros(w_in.size, np.uint8))
    assert np.allclose(s_out[1:-1], 0.2 / 2.0, rtol=1e-5)  # sigma / sqrt(4)


def test_resampling_masks_uncovered_and_bad_pixels():
    w_in = np.linspace(5000, 5100, 101)
    mask = np.zeros(w_in.size, np.uint8)
    mask[50] = MaskBit.BAD_PIXEL
    flux = np.ones(w_in.size)
    flux[50] = 1e6  # garbage on the bad pixel must not leak
    w_out = np.linspace(4990, 5110, 61)
    f, s, m = Resampler.between(w_in, w_out).apply(flux, np.full(w_in.size, 0.1), mask)
    assert m[0] & MaskBit.NO_DATA and m[-1] & MaskBit.NO_DATA
    assert f[0] == 0 and np.isinf(s[0])
    inside = (m & MaskBit.NO_DATA) == 0
    assert np.allclose(f[inside], 1.0)
    assert (m[inside] & MaskBit.INTERPOLATED).sum() > 0


def test_air_vacuum_round_trip_and_size():
    w = np.array([3700.0, 6562.8, 9500.0])
    assert np.allclose(air_to_vacuum(vacuum_to_air(w)), w, atol=1e-6)
    assert air_to_vacuum(np.array([6562.80]))[0] == pytest.approx(6564.61, abs=0.01)


def test_units_are_parsed_and_converted():
    flam = parse_unit("erg/s/cm2/A", where="f", field="BUNIT")
    assert flam == u.erg / u.s / u.cm**2 / u.AA
    assert parse_unit("A", where="f", field="CUNIT1", wavelength=True) == u.AA
    wave = np.array([5000.0])
    f, s = convert_flux(np.array([1.0]), np.array([0.1]), u.W / u.m**2 / u.nm, flam, wave,
                        where="f")
    assert f[0] == pytest.approx(100.0) and s[0] == pytest.approx(10.0)


def test_unknown_unit_names_file_and_field():
    with pytest.raises(SpectraError, match="spec.fits: field 'BUNIT': unknown unit 'blorps'"):
        parse_unit("blorps", where="spec.fits", field="BUNIT")
    with pytest.raises(SpectraError, match="not a wavelength unit"):
        parse_unit("erg", where="spec.fits", field="CUNIT1", wavelength=True)
