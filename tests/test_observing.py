"""Observing conditions of simulated surveys: reddening, tellurics, flux calibration, and a
survey simulated with them through the command line."""

import subprocess
import sys

import extinction
import numpy as np
import pytest
import yaml

from stellar_ray.quantities import snr_window
from stellar_ray.simulation.instrument import instrument_named
from stellar_ray.simulation.observing import Observing, ObservingConditions
from stellar_ray.spectra.batch import SpectrumBatch
from stellar_ray.spectra.dataset import iter_shards, validate_dataset

pytestmark = pytest.mark.timeout(300)

LRS = instrument_named("LRS")


def draws(n, **values):
    """``n`` identical draws with the given ebv / airmass / pwv; no calibration terms."""
    out = {"ebv": np.zeros(n), "airmass": np.ones(n), "pwv": np.zeros(n),
           "calibration": np.zeros((n, len(LRS.arms), 4))}
    out.update({k: np.full(n, v, dtype=float) for k, v in values.items()})
    return out


def test_the_defaults_change_nothing():
    factor = Observing(ObservingConditions(), LRS).transmission(draws(2)).numpy()
    assert np.array_equal(factor, np.ones_like(factor))


def test_reddening_follows_the_extinction_law_with_the_flux_unit_kept():
    observing = Observing(ObservingConditions(r_v=3.1), LRS)
    factor = observing.transmission(draws(1, ebv=0.4)).numpy()[0]
    wave = observing.wave
    k = extinction.fitzpatrick99(wave, 3.1, 3.1)
    expected = 10 ** (-0.4 * 0.4 * (k - k[snr_window(wave)].mean()))
    np.testing.assert_allclose(factor, expected, rtol=1e-10)
    blue, red = factor[wave < 4500].mean(), factor[wave > 8500].mean()
    # E(B-V) = 0.4 dims 4000-4500 Å against 8500-9500 Å by about a magnitude
    assert 0.3 < blue / red < 0.5, blue / red


def test_telluric_bands_where_and_as_deep_as_the_atmosphere_makes_them():
    observing = Observing(ObservingConditions(tellurics=True), LRS)
    wave = observing.wave
    t = observing.transmission(draws(3, airmass=1.0, pwv=0.0)).numpy()
    t[1] = observing.transmission(draws(1, airmass=2.0, pwv=0.0)).numpy()[0]
    t[2] = observing.transmission(draws(1, airmass=1.0, pwv=10.0)).numpy()[0]
    a_band = (wave > 7594) & (wave < 7625)
    b_band = (wave > 6868) & (wave < 6890)
    water = (wave > 9300) & (wave < 9450)
    assert np.abs(t[:, wave < 6790] - 1.0).max() < 1e-4
    assert t[0, a_band].mean() < 0.6 and t[0, a_band].min() < 0.3
    assert 0.6 < t[0, b_band].mean() < 0.95
    assert t[1, a_band].mean() < t[0, a_band].mean() - 0.05  # twice the air mass
    assert t[0, water].mean() > 0.99 and t[2, water].mean() < 0.7  # 10 mm of water
    np.testing.assert_allclose(t[2, a_band], t[0, a_band], atol=0.02)  # O2 needs no water


def test_calibration_distortions_are_legendre_polynomials_of_the_asked_size():
    conditions = ObservingConditions(calibration_degree=2, calibration_rms=0.04)
    observing = Observing(conditions, LRS)
    drawn = conditions.draw(400, np.random.default_rng(3), len(LRS.arms))
    assert drawn["calibration"].shape == (400, 3, 3)
    np.testing.assert_allclose(drawn["calibration"].std(axis=(0, 1)), 0.04, rtol=0.1)
    factor = observing.transmission(drawn).numpy()
    for sel, basis in zip(observing.arms, observing.legendre):
        coeff, *_ = np.linalg.lstsq(basis, factor[:, sel].T - 1.0, rcond=None)
        assert np.abs(basis @ coeff - (factor[:, sel].T - 1.0)).max() < 1e-9
    first = factor[:, observing.arms[0]]
    second = factor[:, observing.arms[1]]
    assert abs(np.corrcoef(first[:, -1], second[:, 0])[0, 1]) < 0.2  # arms independent


def test_a_survey_observed_under_conditions_through_the_cli(tmp_path):
    """Same labels and S/N as without conditions; conditions stored per spectrum; the
    stored model flux is what the noise was added to."""
    base = {"instrument": "LRS", "n_spectra": 6, "rows_per_shard": 6, "seed": 5,
            "snr": {"kind": "fixed", "value": 80}}
    observed = {**base, "observing": {"ebv": [0.0, 0.6], "tellurics": True,
                                      "airmass": [1.0, 1.8], "pwv_mm": [1.0, 15.0],
                                      "calibration_rms": 0.03}}
    for name, config in (("plain", base), ("observed", observed)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        out = subprocess.run([sys.executable, "-m", "stellar_ray.cli", "simulate", str(path),
                              "--to", str(tmp_path / name)], capture_output=True, text=True,
                             timeout=280)
        assert out.returncode == 0, out.stderr
    manifest = validate_dataset(str(tmp_path / "observed"))
    assert {c.name for c in manifest.extra_metadata} == {"ebv", "airmass", "pwv"}
    plain = SpectrumBatch.concat(list(iter_shards(str(tmp_path / "plain"))))
    seen = SpectrumBatch.concat(list(iter_shards(str(tmp_path / "observed"))))
    for name in plain.labels:
        np.testing.assert_array_equal(plain.labels[name], seen.labels[name])
    assert np.all((seen.metadata["ebv"] >= 0) & (seen.metadata["ebv"] <= 0.6))
    assert np.ptp(seen.metadata["pwv"]) > 0
    pull = (seen.flux - seen.model_flux) / seen.sigma
    usable = np.isfinite(pull) & (seen.mask == 0)
    assert abs(pull[usable].std() - 1.0) < 0.03
    wave = manifest.grid.wavelength()
    a_band = (wave > 7594) & (wave < 7625)
    ratio = seen.model_flux[:, a_band].mean(axis=1) / plain.model_flux[:, a_band].mean(axis=1)
    assert np.all(ratio < 0.8), ratio
