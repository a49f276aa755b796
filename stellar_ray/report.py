"""A short report on a catalog of a simulated survey: estimates against the true labels,
residuals against S/N with the Cramér–Rao bounds of the same spectra, and the calibration
of the posterior intervals. Figures (PNG) and ``report.md`` go into one folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from matplotlib.figure import Figure  # figures without pyplot: no display, no global state

from .simulation.fisher import fisher
from .simulation.generator import SpectrumGenerator
from .simulation.labels import LABELS
from .spectra.dataset import iter_shards
from .spectra.schema import quantile_column

UNITS = {lab.name: lab.unit for lab in LABELS}


@dataclass
class LabelSummary:
    """How one label came out: robust scatter, bias, share within the 68%/95% intervals
    and the median ratio of |error| to the Cramér–Rao bound."""

    name: str
    sigma_robust: float
    bias: float
    coverage68: float
    coverage95: float
    error_over_crb: float


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


def _coverage(table: pa.Table, name: str, lo: float, hi: float, truth: np.ndarray) -> float:
    low, high = (table.column(quantile_column(name, q)).to_numpy() for q in (lo, hi))
    return float(np.mean((truth >= low) & (truth <= high)))


def make_report(catalog: pa.Table, survey: str, generator: SpectrumGenerator, labels: list[str],
                folder: Path, n_crb: int = 48) -> list[LabelSummary]:
    """Figures and ``report.md`` in ``folder`` for a cINN catalog of the simulated ``survey``
    (its quantile columns must include 0.025, 0.16, 0.84, 0.975)."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = catalog.column("spectrum_id").to_pylist()
    truth_all, sigma = _truth(survey, ids[:n_crb])
    finite = np.where(np.isfinite(sigma), sigma, 1e6)  # masked pixels carry no information
    bounds = fisher(torch.as_tensor(truth_all), torch.as_tensor(finite), model=generator)
    crb = {n: bounds.crb[:, i] for i, n in enumerate(bounds.names)}
    snr = catalog.column("snr").to_numpy()

    fig = Figure(figsize=(4.2 * len(labels), 7.5))
    axes = fig.subplots(2, len(labels), squeeze=False)
    summaries = []
    for k, name in enumerate(labels):
        est = catalog.column(name).to_numpy()
        true = catalog.column(f"input_{name}").to_numpy()
        resid = est - true
        unit = f" [{UNITS.get(name)}]" if UNITS.get(name) else ""
        ax = axes[0, k]
        ax.errorbar(true, est, yerr=catalog.column(f"{name}_err").to_numpy(), fmt=".",
                    ms=3, alpha=0.5, elinewidth=0.5)
        span = [np.nanmin(true), np.nanmax(true)]
        ax.plot(span, span, "k--", lw=1)
        ax.set(xlabel=f"true {name}{unit}", ylabel=f"cINN {name}{unit}")
        ax = axes[1, k]
        ax.scatter(snr, np.abs(resid), s=4, alpha=0.5, label="|estimate − truth|")
        ax.scatter(snr[:n_crb], crb[name], s=10, c="k", marker="x", label="Cramér–Rao bound")
        ax.set(xscale="log", yscale="log", xlabel="S/N", ylabel=f"{name}{unit}")
        ax.legend(fontsize=7)
        mad = 1.4826 * np.nanmedian(np.abs(resid - np.nanmedian(resid)))
        summaries.append(LabelSummary(
            name=name, sigma_robust=float(mad), bias=float(np.nanmedian(resid)),
            coverage68=_coverage(catalog, name, 0.16, 0.84, true),
            coverage95=_coverage(catalog, name, 0.025, 0.975, true),
            error_over_crb=float(np.nanmedian(np.abs(resid[:n_crb]) / crb[name]))))
    fig.tight_layout()
    fig.savefig(folder / "estimates_and_residuals.png", dpi=110)

    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    for s in summaries:
        ax.plot([0, 0.68, 0.95, 1], [0, s.coverage68, s.coverage95, 1], "o-", label=s.name)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(xlabel="nominal coverage", ylabel="share of true labels inside",
           title="calibration of the posterior intervals")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "calibration.png", dpi=110)

    lines = ["# stellar-ray demo report", "",
             f"{len(ids)} spectra; Cramér–Rao bounds from the generator's Fisher matrix for "
             f"the first {min(n_crb, len(ids))} (all ten labels free, each spectrum's own σ).",
             "", "| label | σ_robust | bias | in 68% interval | in 95% interval | "
             "median \\|error\\| / CRB |", "|---|---|---|---|---|---|"]
    lines += [f"| {s.name} | {s.sigma_robust:.4g} | {s.bias:+.3g} | {s.coverage68:.2f} | "
              f"{s.coverage95:.2f} | {s.error_over_crb:.2f} |" for s in summaries]
    lines += ["", "![estimates](estimates_and_residuals.png)", "",
              "![calibration](calibration.png)", ""]
    (folder / "report.md").write_text("\n".join(lines))
    return summaries
