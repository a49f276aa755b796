"""A short report on a catalog of a simulated survey: estimates against the true labels,
residuals against S/N with the Cramér–Rao bounds of the same spectra, and the calibration
of the intervals (coverage per S/N bin, rank histograms). Figures (PNG) and ``report.md`` go
into one folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from matplotlib.figure import Figure  # figures without pyplot: no display, no global state
from scipy.stats import spearmanr

from .calibration import LEVELS, Calibration, calibrate
from .simulation.fisher import EFFICIENT_MEDIAN_RATIO, Nuisance, fisher
from .simulation.generator import SpectrumGenerator
from .simulation.labels import LABELS
from .spectra.catalog import load_catalog_manifest, read_catalog
from .spectra.dataset import iter_shards


@dataclass
class LabelSummary:
    """How one label came out: robust scatter, bias, share within the 68%/95% intervals
    (and their calibration in full) and the median ratio of |error| to the Cramér–Rao
    bound."""

    name: str
    sigma_robust: float
    sigma_robust_by_snr: list[tuple[float, float, float]]  # (S/N low, high, σ_robust)
    bias: float
    coverage68: float
    coverage95: float
    error_over_crb: float
    calibration: Calibration


def _truth(survey: str, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """True labels (N, 10) in generator order and sigma (N, L) of ``ids`` in ``survey``."""
    wanted, rows, sigmas = set(ids), {}, {}
    for batch in iter_shards(survey):
        for i, sid in enumerate(batch.spectrum_id):
            if sid in wanted:
                rows[sid] = [batch.labels[lab.name][i] if lab.name in batch.labels
                             else batch.metadata[lab.name][i] for lab in LABELS]
                sigmas[sid] = batch.sigma[i]
    return (np.array([rows[i] for i in ids], dtype=np.float64),
            np.stack([sigmas[i] for i in ids]))


def _bounds(survey: str, ids: list[str], generator: SpectrumGenerator
            ) -> dict[str, np.ndarray]:
    """Cramér–Rao bound per label for the spectra ``ids`` of ``survey``: their true labels
    and own σ through the generator's Fisher matrix (all ten labels free, and one flux
    scale: the models divide each spectrum by its median, so they do not know it either);
    ∞ for a label a spectrum does not constrain."""
    truth, sigma = _truth(survey, ids)
    finite = np.where(np.isfinite(sigma), sigma, 1e6)  # masked pixels carry no information
    bounds = fisher(torch.as_tensor(truth), torch.as_tensor(finite), model=generator,
                    nuisance=Nuisance(continuum_degree=0,
                                      arm_pixels=(np.arange(finite.shape[1]),)))
    return {n: bounds.crb[:, i] for i, n in enumerate(bounds.names)}


def sigma_robust(residuals: np.ndarray) -> float:
    """1.4826 × the median absolute deviation (NaN left out; NaN when none is left)."""
    r = residuals[np.isfinite(residuals)]
    return float(1.4826 * np.median(np.abs(r - np.median(r)))) if r.size else float("nan")


#: S/N above which the demo's targets are stated.
HIGH_SNR = 50.0


def _summary(catalog: pa.Table, name: str, crb: np.ndarray) -> LabelSummary:
    est = catalog.column(name).to_numpy()
    true = catalog.column(f"input_{name}").to_numpy()
    resid = est - true
    snr = catalog.column("snr").to_numpy(zero_copy_only=False).astype(np.float64)
    cal = calibrate(catalog, name, true)
    edges = [(lo, hi) for lo, hi, _, _ in cal.by_snr] + [(HIGH_SNR, np.inf)]
    by_snr = [(lo, hi, sigma_robust(resid[(snr >= lo) & (snr < hi)])) for lo, hi in edges]
    return LabelSummary(
        name=name, sigma_robust=sigma_robust(resid), sigma_robust_by_snr=by_snr,
        bias=float(np.nanmedian(resid)),
        coverage68=cal.coverage[0.68], coverage95=cal.coverage[0.95],
        error_over_crb=float(np.nanmedian(np.where(
            np.isfinite(crb), np.abs(resid[:crb.size]) / crb, np.nan))), calibration=cal)


def _estimates_figure(catalog: pa.Table, labels: list[str], units: dict[str, str],
                      crb: dict[str, np.ndarray], path: Path) -> None:
    """Per label: estimate against truth (top), |error| and the bound against S/N (bottom)."""
    snr = catalog.column("snr").to_numpy()
    fig = Figure(figsize=(4.2 * len(labels), 7.5))
    axes = fig.subplots(2, len(labels), squeeze=False)
    for k, name in enumerate(labels):
        est = catalog.column(name).to_numpy()
        true = catalog.column(f"input_{name}").to_numpy()
        unit = f" [{units[name]}]" if units.get(name) else ""
        ax = axes[0, k]
        ax.errorbar(true, est, yerr=catalog.column(f"{name}_err").to_numpy(), fmt=".",
                    ms=3, alpha=0.5, elinewidth=0.5)
        span = [np.nanmin(true), np.nanmax(true)]
        ax.plot(span, span, "k--", lw=1)
        ax.set(xlabel=f"true {name}{unit}", ylabel=f"cINN {name}{unit}")
        ax = axes[1, k]
        ax.scatter(snr, np.abs(est - true), s=4, alpha=0.5, label="|estimate − truth|")
        ax.scatter(snr[:crb[name].size], crb[name], s=10, c="k", marker="x",
                   label="Cramér–Rao bound")
        ax.set(xscale="log", yscale="log", xlabel="S/N", ylabel=f"{name}{unit}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _calibration_figure(summaries: list[LabelSummary], path: Path) -> None:
    """Coverage against nominal (left) and each label's rank histogram, counts over their
    expectation for a calibrated estimate (right)."""
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    for s in summaries:
        cal = s.calibration
        left.plot([0, *LEVELS, 1], [0, *(cal.coverage[lv] for lv in LEVELS), 1], "o-",
                  label=s.name)
        expected = np.diff(np.concatenate([[0.0], cal.levels, [1.0]])) * cal.counts.sum()
        centre = np.concatenate([[0.0], cal.levels]) + np.diff(
            np.concatenate([[0.0], cal.levels, [1.0]])) / 2
        right.plot(centre, cal.counts / expected, "o-",
                   label=f"{s.name} (p = {cal.p_uniform:.2g})")
    left.plot([0, 1], [0, 1], "k--", lw=1)
    left.set(xlabel="nominal coverage", ylabel="share of true labels inside",
             title="calibration of the intervals")
    right.axhline(1.0, color="k", ls="--", lw=1)
    right.set(xlabel="rank of the truth (quantile level)", ylabel="count / expected",
              title="rank histogram (flat: calibrated)")
    left.legend()
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _snr_table(summaries: list[LabelSummary]) -> list[str]:
    """Markdown rows: σ_robust and the coverage of the 68 % and 95 % intervals per label and
    S/N bin."""
    lines = ["| label | S/N | spectra | σ_robust | in 68% interval | in 95% interval |",
             "|---|---|---|---|---|---|"]
    for s in summaries:
        for (lo, hi, n, cov), (_, _, sig) in zip(s.calibration.by_snr, s.sigma_robust_by_snr):
            span = f"≥ {lo:g}" if np.isinf(hi) else f"{lo:g}–{hi:g}"
            lines.append(f"| {s.name} | {span} | {n} | {sig:.3g} | {cov[0.68]:.2f} | "
                         f"{cov[0.95]:.2f} |")
    return lines


def high_snr_sigma(summary: LabelSummary) -> float:
    """σ_robust of the spectra with S/N ≥ :data:`HIGH_SNR`."""
    return summary.sigma_robust_by_snr[-1][2]


def hot_star_check(catalog: pa.Table, threshold_k: float = 7500.0) -> str:
    """One sentence on the stars whose true Teff is at least ``threshold_k``: how many, the
    median relative Teff error and the rank correlation of estimate and truth (a pile-up at
    one temperature shows as a correlation near 0)."""
    true = catalog.column("input_teff").to_numpy()
    est = catalog.column("teff").to_numpy()
    hot = np.isfinite(true) & np.isfinite(est) & (true >= threshold_k)
    if hot.sum() < 3:
        return f"Fewer than 3 stars with true Teff ≥ {threshold_k:g} K."
    rho = spearmanr(true[hot], est[hot]).statistic
    rel = np.median(np.abs(est[hot] - true[hot]) / true[hot])
    return (f"Stars with true Teff ≥ {threshold_k:g} K: {int(hot.sum())}; median |ΔTeff|/Teff "
            f"{rel:.3f}; rank correlation of estimate and truth {rho:.2f}.")


def _markdown(summaries: list[LabelSummary], spectra: int, n_crb: int, hot: str) -> str:
    lines = ["# stellar-ray demo report", "",
             f"{spectra} spectra; Cramér–Rao bounds from the generator's Fisher matrix for "
             f"the first {n_crb} (all ten labels and the flux scale free, each spectrum's "
             f"own σ). An efficient unbiased estimator has a median \\|error\\| / CRB of "
             f"{EFFICIENT_MEDIAN_RATIO:.2f}; larger is information the model leaves unused.",
             "", f"| label | σ_robust | σ_robust (S/N ≥ {HIGH_SNR:g}) | bias | in 68% interval "
             "| in 95% interval | median \\|error\\| / CRB | rank test p |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {s.name} | {s.sigma_robust:.4g} | {high_snr_sigma(s):.4g} | {s.bias:+.3g} | "
              f"{s.coverage68:.2f} | {s.coverage95:.2f} | {s.error_over_crb:.2f} | "
              f"{s.calibration.p_uniform:.2g} |" for s in summaries]
    lines += ["", hot]
    lines += ["", "Coverage per S/N bin (a calibrated 68 % interval holds the truth 68 % of "
              "the time in every bin, within the binomial scatter √(0.68·0.32/n)):", "",
              *_snr_table(summaries),
              "", "The rank test: the true labels counted between consecutive quantiles of "
              "each spectrum's posterior (a rank histogram, as simulation-based calibration "
              "does with posterior draws); p is the χ² test of the counts against a "
              "calibrated estimate's expectation (small p: miscalibrated).",
              "", "![estimates](estimates_and_residuals.png)", "",
              "![calibration](calibration.png)", ""]
    return "\n".join(lines)


def make_report(catalog: str, *, survey: str, generator: SpectrumGenerator,
                labels: list[str], folder: Path, n_crb: int = 48) -> list[LabelSummary]:
    """Figures and ``report.md`` in ``folder`` for the cINN catalog at URL ``catalog`` of the
    simulated ``survey`` (its quantile columns must include 0.025, 0.16, 0.84, 0.975; units
    come from the catalog)."""
    folder.mkdir(parents=True, exist_ok=True)
    table = read_catalog(catalog)
    units = load_catalog_manifest(catalog).units
    ids = table.column("spectrum_id").to_pylist()
    crb = _bounds(survey, ids[:n_crb], generator)
    summaries = [_summary(table, name, crb[name]) for name in labels]
    _estimates_figure(table, labels, units, crb, folder / "estimates_and_residuals.png")
    _calibration_figure(summaries, folder / "calibration.png")
    hot = hot_star_check(table) if "teff" in labels else ""
    (folder / "report.md").write_text(_markdown(summaries, len(ids), min(n_crb, len(ids)),
                                                hot))
    return summaries
