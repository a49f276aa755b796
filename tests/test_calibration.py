"""Calibration of catalog uncertainties: coverage per S/N bin and the rank test, on
catalogs whose errors are right, too small, or given as posterior quantiles."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy import stats

from stellar_ray.calibration import calibrate, error_model, recalibrated
from stellar_ray.spectra.schema import quantile_column

N = 4000


def _catalog(rng: np.random.Generator, claimed_scale: float, quantiles: bool = False
             ) -> tuple[pa.Table, np.ndarray]:
    """Estimates truth + N(0, σ) with σ growing as 1/S/N, reporting σ × claimed_scale (as
    ``teff_err`` or as quantile columns)."""
    snr = rng.uniform(5.0, 150.0, N)
    sigma = 2000.0 / snr
    truth = rng.uniform(4000.0, 7000.0, N)
    est = truth + sigma * rng.standard_normal(N)
    columns = {"teff": est, "teff_err": sigma * claimed_scale, "snr": snr}
    if quantiles:
        for q in (0.025, 0.16, 0.5, 0.84, 0.975):
            columns[quantile_column("teff", q)] = est + claimed_scale * sigma * stats.norm.ppf(q)
    return pa.table(columns), truth


def test_right_errors_cover_their_share_in_every_snr_bin():
    """Errors as they are: the 68 % and 95 % intervals hold the truth within 3 binomial σ
    overall and in every S/N bin, and the rank test does not reject uniformity."""
    rng = np.random.default_rng(0)
    for quantiles in (False, True):
        table, truth = _catalog(rng, 1.0, quantiles)
        cal = calibrate(table, "teff", truth)
        for level, got in cal.coverage.items():
            assert abs(got - level) < 3 * np.sqrt(level * (1 - level) / N), cal.coverage
        assert [b[:2] for b in cal.by_snr] == [(0, 10), (10, 20), (20, 50), (50, 100),
                                               (100, np.inf)]
        assert sum(b[2] for b in cal.by_snr) == N
        for _, _, n, cov in cal.by_snr:
            for level, got in cov.items():
                assert abs(got - level) < 3.5 * np.sqrt(level * (1 - level) / n), cal.by_snr
        assert cal.p_uniform > 1e-3
        assert len(cal.counts) == len(cal.levels) + 1 == (6 if quantiles else 10)
        assert cal.counts.sum() == N


def test_overconfident_errors_are_caught():
    """Errors reported at half their size: coverage falls to what a 0.5σ-wide interval holds
    (2Φ(0.5) − 1 = 0.38 for the 68 % interval) and the rank test rejects."""
    rng = np.random.default_rng(1)
    for quantiles in (False, True):
        table, truth = _catalog(rng, 0.5, quantiles)
        cal = calibrate(table, "teff", truth)
        want = 2 * stats.norm.cdf(0.5 * stats.norm.ppf(0.84)) - 1
        assert abs(cal.coverage[0.68] - want) < 0.03, cal.coverage
        assert cal.p_uniform < 1e-6


def test_unknown_truths_are_left_out():
    rng = np.random.default_rng(2)
    table, truth = _catalog(rng, 1.0)
    truth[::4] = np.nan
    cal = calibrate(table, "teff", truth)
    assert cal.counts.sum() == N - N // 4
    assert sum(b[2] for b in cal.by_snr) == N - N // 4


def test_the_error_model_restores_coverage_in_every_snr_bin():
    """Errors that carry the noise only (a point regressor's noise re-draws) while the
    estimates also have an S/N-independent model error of 60 K: the fitted error model finds
    that floor and the recalibrated 68 % and 95 % intervals hold their share in every S/N
    bin (3.5 binomial σ), where the given ones fall short at high S/N."""
    rng = np.random.default_rng(3)
    snr = rng.uniform(5.0, 150.0, N)
    noise = 2000.0 / snr
    truth = rng.uniform(4000.0, 7000.0, N)
    est = truth + np.hypot(noise, 60.0) * rng.standard_normal(N)
    for quantiles in (False, True):
        columns = {"teff": est, "teff_err": noise, "snr": snr}
        if quantiles:
            for q in (0.16, 0.5, 0.84):
                columns[quantile_column("teff", q)] = est + noise * stats.norm.ppf(q)
        table = pa.table(columns)
        assert calibrate(table, "teff", truth).by_snr[-1][3][0.68] < 0.45
        scale, floor = error_model(table, "teff", truth)
        assert abs(scale - 1.0) < 0.1 and abs(floor - 60.0) < 8.0, (scale, floor)
        cal = calibrate(recalibrated(table, "teff", scale, floor), "teff", truth)
        assert abs(cal.coverage[0.68] - 0.68) < 0.005, cal.coverage
        for _, _, n, cov in cal.by_snr:
            for level, got in cov.items():
                assert abs(got - level) < 3.5 * np.sqrt(level * (1 - level) / n), cal.by_snr
