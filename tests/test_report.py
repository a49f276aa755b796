"""The demo report's figures of merit: robust scatter per S/N bin (the targets are stated at
S/N ≥ 50) and the check that hot stars do not pile up at one temperature."""

import numpy as np
import pyarrow as pa
import pytest

from stellar_ray.report import _summary, high_snr_sigma, hot_star_check, sigma_robust


def catalog(est_teff: np.ndarray, true_teff: np.ndarray, snr: np.ndarray,
            err: np.ndarray) -> pa.Table:
    return pa.table({"teff": est_teff, "input_teff": true_teff, "teff_err": err, "snr": snr})


def test_sigma_robust_is_the_gaussian_scatter_and_ignores_outliers():
    rng = np.random.default_rng(0)
    r = rng.normal(3.0, 2.0, 20_000)
    r[:500] = 1e4  # 2.5 % wild estimates
    assert sigma_robust(r) == pytest.approx(2.0 * 1.03, rel=0.03)
    assert np.isnan(sigma_robust(np.array([np.nan])))


def test_scatter_is_reported_per_snr_bin_and_above_50():
    """Errors of 200 K / (S/N / 10): each bin's σ_robust follows, and S/N ≥ 50 is stated on
    its own."""
    rng = np.random.default_rng(1)
    snr = 10 ** rng.uniform(1.0, 2.3, 8000)
    sigma = 200.0 * 10.0 / snr
    true = rng.uniform(4000.0, 7000.0, snr.size)
    table = catalog(true + rng.normal(0.0, sigma), true, snr, sigma)
    summary = _summary(table, "teff", np.full(4, 10.0))
    for lo, hi, sig in summary.sigma_robust_by_snr:
        inside = (snr >= lo) & (snr < hi)
        expected = 1.4826 * np.median(np.abs(sigma[inside] * rng.normal(size=inside.sum())))
        assert sig == pytest.approx(expected, rel=0.15), (lo, hi)
    high = snr >= 50
    assert high_snr_sigma(summary) < 0.5 * summary.sigma_robust
    assert high_snr_sigma(summary) == pytest.approx(
        sigma_robust(table.column("teff").to_numpy()[high] - true[high]))


def test_a_pile_up_of_hot_stars_is_told_apart_from_a_good_estimate():
    rng = np.random.default_rng(2)
    true = rng.uniform(7500.0, 20000.0, 200)
    good = hot_star_check(catalog(true * rng.normal(1.0, 0.03, 200), true,
                                  np.full(200, 80.0), 0.03 * true))
    piled = hot_star_check(catalog(np.full(200, 10_000.0) + rng.normal(0, 50, 200), true,
                                   np.full(200, 80.0), np.full(200, 300.0)))
    assert "Teff ≥ 7500 K: 200" in good

    def correlation(text):
        return float(text.rsplit(" ", 1)[1].rstrip("."))

    assert correlation(good) > 0.9 and abs(correlation(piled)) < 0.3
