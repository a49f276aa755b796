"""Validation metrics of the tasks (papers 002, 003, 004), in physical units."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..calibration import SNR_EDGES

#: Stellar types by log g (dex): giants < 2.5 <= subgiants <= 4 < dwarfs.
STELLAR_TYPES = {"giant": (-np.inf, 2.5), "subgiant": (2.5, 4.0), "dwarf": (4.0, np.inf)}


def emulator_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """MSE, MAE and MAQE₀.₉₅ (mean of the 5% largest absolute errors) over all pixels."""
    err = np.abs(pred - target).ravel()
    top = np.sort(err)[int(np.floor(0.95 * err.size)):]
    return {"mse": float(np.mean(err**2)), "mae": float(err.mean()),
            "maqe95": float(top.mean()) if top.size else 0.0}


def robust_sigma(x: np.ndarray) -> float:
    """1.4826 × median absolute deviation."""
    return float(1.4826 * np.median(np.abs(x - np.median(x)))) if x.size else float("nan")


def regression_metrics(pred: np.ndarray, true: np.ndarray, names: list[str],
                       logg: np.ndarray | None = None) -> dict[str, float]:
    """R², MAE and σ_robust per label (physical units), overall and per stellar type."""
    out: dict[str, float] = {}
    groups = {"all": np.ones(len(pred), bool)}
    if logg is not None:
        for kind, (lo, hi) in STELLAR_TYPES.items():
            groups[kind] = (logg >= lo) & (logg < hi) if hi != 4.0 else (logg >= lo) & (
                logg <= hi)
    for k, name in enumerate(names):
        for group, sel in groups.items():
            ok = sel & np.isfinite(true[:, k])
            if ok.sum() < 2:
                continue
            resid = pred[ok, k] - true[ok, k]
            var = np.var(true[ok, k])
            suffix = "" if group == "all" else f"/{group}"
            out[f"{name}/r2{suffix}"] = float(1 - np.mean(resid**2) / var) if var > 0 else float(
                "nan")
            out[f"{name}/mae{suffix}"] = float(np.mean(np.abs(resid)))
            out[f"{name}/sigma_robust{suffix}"] = robust_sigma(resid)
    return out


def coverage(samples: np.ndarray, true: np.ndarray, levels=(0.68, 0.95),
             names: Sequence[str] | None = None, snr: np.ndarray | None = None,
             snr_edges: Sequence[float] = SNR_EDGES
             ) -> dict[str, float]:
    """Fraction of true labels inside the central posterior intervals: samples (S, B, K),
    true (B, K): over all labels (``coverage68``), and with ``names`` per label
    (``teff/coverage68``) and, with ``snr`` (B,), per S/N bin (``teff/coverage68/snr20-50``)."""
    out = {}
    known = np.isfinite(true)
    for level in levels:
        lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=0)
        inside = (true >= lo) & (true <= hi)
        tag = f"coverage{int(level * 100)}"
        out[tag] = float(np.nanmean(np.where(known, inside, np.nan)))
        for k, name in enumerate(names or ()):
            sel = known[:, k]
            if sel.any():
                out[f"{name}/{tag}"] = float(inside[sel, k].mean())
            if snr is None:
                continue
            for a, b in zip(snr_edges[:-1], snr_edges[1:]):
                in_bin = sel & (snr >= a) & (snr < b)
                if in_bin.any():
                    out[f"{name}/{tag}/snr{a:g}-{b:g}"] = float(inside[in_bin, k].mean())
    return out
