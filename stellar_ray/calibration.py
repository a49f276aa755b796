"""How often the uncertainties hold the truth: coverage of central intervals per label and
per S/N bin, and a rank (PIT) histogram with a χ² test of uniformity.

Intervals come from a catalog's quantile columns (the cINN's posterior) when it has them,
else from the Gaussian ``estimate ± z σ`` of the ``<label>_err`` column (point regressors'
σ from noise re-draws, fit mode's from JᵀJ) — both checked the same way. The rank histogram
counts the true labels between consecutive quantiles of each spectrum's distribution; for a
calibrated estimate each count is binomial with the levels' difference as probability, which
is what simulation-based calibration (Talts et al. 2018) tests with posterior draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from scipy import stats

from .spectra.schema import quantile_column

#: Edges of the S/N bins that coverage is reported in (per pixel, the catalog's ``snr``).
SNR_EDGES: tuple[float, ...] = (0.0, 10.0, 20.0, 50.0, 100.0, np.inf)
#: The central intervals whose coverage is reported.
LEVELS: tuple[float, ...] = (0.68, 0.95)
#: Quantile levels of the rank histogram when intervals come from σ (ten equal bins).
GAUSSIAN_RANK_LEVELS: tuple[float, ...] = tuple(np.round(np.arange(0.1, 1.0, 0.1), 2))


@dataclass(frozen=True)
class Calibration:
    """One label's calibration: ``coverage[level]`` over all spectra, ``by_snr`` a list of
    (lo, hi, n, {level: coverage}) per non-empty S/N bin, the rank histogram's ``levels``
    (Q,), ``counts`` (Q + 1,) and the χ² test's p-value (small: not uniform)."""

    name: str
    coverage: dict[float, float]
    by_snr: list[tuple[float, float, int, dict[float, float]]]
    levels: tuple[float, ...]
    counts: np.ndarray
    p_uniform: float


def _gaussian_quantiles(table: pa.Table, name: str, levels: Sequence[float]) -> np.ndarray:
    est = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
    err = table.column(f"{name}_err").to_numpy(zero_copy_only=False).astype(np.float64)
    return est[:, None] + err[:, None] * stats.norm.ppf(np.asarray(levels))[None, :]


def _quantiles(table: pa.Table, name: str, levels: Sequence[float]) -> np.ndarray | None:
    """(N, Q) quantiles at ``levels`` from the catalog's quantile columns, None if any is
    missing."""
    columns = [quantile_column(name, q) for q in levels]
    if not all(c in table.column_names for c in columns):
        return None
    return np.stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                     for c in columns], axis=1)


def _interval(table: pa.Table, name: str, level: float) -> np.ndarray:
    """(N, 2) central ``level`` interval: quantile columns if present, else Gaussian."""
    ends = ((1 - level) / 2, (1 + level) / 2)
    found = _quantiles(table, name, ends)
    return found if found is not None else _gaussian_quantiles(table, name, ends)


def _rank_levels(table: pa.Table, name: str) -> tuple[tuple[float, ...], np.ndarray]:
    """The quantile levels the catalog stores for ``name`` (all of them), or the Gaussian
    deciles, and the (N, Q) quantiles."""
    prefix = f"{name}_q"
    stored = sorted((float(c[len(prefix):]) / 100, c) for c in table.column_names
                    if c.startswith(prefix) and c[len(prefix):].replace(".", "").isdigit())
    if len(stored) >= 2:
        return tuple(q for q, _ in stored), np.stack(
            [table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
             for _, c in stored], axis=1)
    return GAUSSIAN_RANK_LEVELS, _gaussian_quantiles(table, name, GAUSSIAN_RANK_LEVELS)


def calibrate(table: pa.Table, name: str, truth: np.ndarray,
              snr_edges: Sequence[float] = SNR_EDGES) -> Calibration:
    """The calibration of label ``name`` of a catalog ``table`` against ``truth`` (N,)
    (NaN: unknown, left out); S/N bins from the catalog's ``snr`` column."""
    truth = np.asarray(truth, dtype=np.float64)
    known = np.isfinite(truth)
    inside = {}
    for level in LEVELS:
        lo_hi = _interval(table, name, level)
        inside[level] = (truth >= lo_hi[:, 0]) & (truth <= lo_hi[:, 1])
    snr = table.column("snr").to_numpy(zero_copy_only=False).astype(np.float64)
    by_snr = []
    for lo, hi in zip(snr_edges[:-1], snr_edges[1:]):
        sel = known & (snr >= lo) & (snr < hi)
        if sel.any():
            by_snr.append((float(lo), float(hi), int(sel.sum()),
                           {lv: float(inside[lv][sel].mean()) for lv in LEVELS}))
    levels, quantiles = _rank_levels(table, name)
    ranks = (truth[known, None] > quantiles[known]).sum(axis=1)
    counts = np.bincount(ranks, minlength=len(levels) + 1)
    expected = np.diff(np.concatenate([[0.0], levels, [1.0]])) * known.sum()
    p_uniform = float(stats.chisquare(counts, expected).pvalue) if known.sum() else np.nan
    return Calibration(name=name,
                       coverage={lv: float(inside[lv][known].mean()) for lv in LEVELS},
                       by_snr=by_snr, levels=levels, counts=counts, p_uniform=p_uniform)


#: Central interval whose coverage the recalibration sets exactly.
RECALIBRATED_LEVEL = 0.68


def _centre(table: pa.Table, name: str) -> np.ndarray:
    """(N,) what intervals are scaled about: the posterior median when the catalog has it,
    else the estimate."""
    median = _quantiles(table, name, (0.5,))
    return median[:, 0] if median is not None else \
        table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)


def recalibrated(table: pa.Table, name: str, scale: float, floor: float) -> pa.Table:
    """``table`` with label ``name``'s uncertainties widened to σ' = √((scale σ)² + floor²)
    (σ: the ``<name>_err`` column, floor in the label's unit): the error column becomes σ'
    and every quantile column moves away from the median by σ'/σ."""
    err = table.column(f"{name}_err").to_numpy(zero_copy_only=False).astype(np.float64)
    wider = np.hypot(scale * err, floor)
    ratio = np.where(err > 0, wider / np.where(err > 0, err, 1.0), 1.0)
    centre = _centre(table, name)
    out = table.set_column(table.schema.get_field_index(f"{name}_err"), f"{name}_err",
                           pa.array(wider.astype(np.float32)))
    prefix = f"{name}_q"
    for column in out.column_names:
        if column.startswith(prefix) and column[len(prefix):].replace(".", "").isdigit():
            q = out.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
            out = out.set_column(out.schema.get_field_index(column), column,
                                 pa.array((centre + ratio * (q - centre)).astype(np.float32)))
    return out


def error_model(table: pa.Table, name: str, truth: np.ndarray) -> tuple[float, float]:
    """(scale, floor) of σ' = √((scale σ)² + floor²) for label ``name`` against ``truth``
    (N,) (NaN: unknown): the ratio of the two terms by Gaussian maximum likelihood of the
    residuals about the centre (a noise term that grows with σ and an S/N-independent one,
    e.g. a regressor's model error that noise re-draws miss), then both scaled together so
    that the central 68 % intervals hold exactly 68 % of the truths."""
    err = table.column(f"{name}_err").to_numpy(zero_copy_only=False).astype(np.float64)
    resid = np.asarray(truth, dtype=np.float64) - _centre(table, name)
    ok = np.isfinite(resid) & np.isfinite(err) & (err > 0)
    if ok.sum() < 2:
        raise ValueError(f"{name}: fewer than 2 spectra with a truth and an error")
    r2, s2 = resid[ok] ** 2, err[ok] ** 2
    spread = float(np.sqrt(r2.mean())) or float(np.sqrt(s2.mean()))

    def nll(p: np.ndarray) -> float:
        var = np.exp(2 * p[0]) * s2 + np.exp(2 * p[1])
        return float(np.sum(np.log(var) + r2 / var))

    from scipy.optimize import minimize

    best = minimize(nll, x0=[0.0, np.log(0.1 * spread)], method="Nelder-Mead",
                    options={"xatol": 1e-4, "fatol": 1e-6})
    scale, floor = float(np.exp(best.x[0])), float(np.exp(best.x[1]))
    widened = recalibrated(table.filter(pa.array(ok)), name, scale, floor)
    lo_hi = _interval(widened, name, RECALIBRATED_LEVEL)
    centre, t = _centre(widened, name), np.asarray(truth, dtype=np.float64)[ok]
    # the factor each interval would need to reach its truth; the 68th percentile of them
    # makes 68 % of the intervals hold theirs
    half = np.where(t >= centre, lo_hi[:, 1] - centre, centre - lo_hi[:, 0])
    gap = np.abs(t - centre)
    needed = np.where(half > 0, gap / np.where(half > 0, half, 1.0),
                      np.where(gap > 0, np.inf, 0.0))
    factor = float(np.quantile(needed, RECALIBRATED_LEVEL))
    return scale * factor, floor * factor
