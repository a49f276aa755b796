"""Per-spectrum quality flags of a catalog (the ``flags`` column, a bit mask) and the
quantities behind them."""

from __future__ import annotations

import enum

import numpy as np

from ..quantities import measured_snr
from ..spectra.schema import UNUSABLE


class CatalogFlag(enum.IntFlag):
    """Bits of the catalog's ``flags`` column (int32); 0 means no warning."""

    OUTSIDE_DOMAIN = 1  # an estimate lies outside the labels' training range
    LOW_SNR = 2  # S/N below quality.min_snr
    BAD_PIXELS = 4  # share of unusable pixels above quality.max_bad_fraction
    FAILED = 8  # the model or the fit gave no finite answer (estimates are NaN)
    RESAMPLED = 16  # brought to the model's grid, resolution or rest frame first
    RV_UNRELIABLE = 32  # the measured radial velocity is not trustworthy (weak or edge
    # correlation peak); the spectrum was not shifted
    POOR_FIT = 64  # fit mode: χ²_reduced of the best fit above quality.max_chi2_reduced —
    # a spectrum unlike those the emulator was trained on, or a broken one
    OUT_OF_DISTRIBUTION = 128  # regressors, posteriors: ood_score above the artifact's
    # threshold — the input is unlike every validation spectrum of the training set


def unusable(flux: np.ndarray, sigma: np.ndarray, mask: np.ndarray,
             noiseless: bool = False) -> np.ndarray:
    """(B, L) True where a pixel carries no usable flux; in ``noiseless`` data (a model
    grid, σ = 0 by design) a zero σ is no fault."""
    bad_sigma = sigma < 0 if noiseless else sigma <= 0
    return ((mask & int(UNUSABLE)) != 0) | ~np.isfinite(flux) | ~np.isfinite(sigma) | \
        bad_sigma


def snr_of(batch: dict[str, np.ndarray], wave_a: np.ndarray) -> np.ndarray:
    """(B,) S/N: the dataset's ``snr`` column where it has one, else measured from the
    spectrum (median flux/σ over the S/N window)."""
    if "snr" in batch:
        given = np.asarray(batch["snr"], dtype=np.float64)
        if np.all(np.isfinite(given)):
            return given
    return measured_snr(np.asarray(batch["flux"]), np.asarray(batch["sigma"]), wave_a)


def quality_flags(estimates: np.ndarray, *, low: np.ndarray, high: np.ndarray,
                  snr: np.ndarray, bad_fraction: np.ndarray, min_snr: float,
                  max_bad_fraction: float) -> np.ndarray:
    """(B,) int32 flags from estimates (B, K) and the training domain [low, high] (K)."""
    flags = np.zeros(len(estimates), dtype=np.int32)
    finite = np.isfinite(estimates).all(axis=1)
    outside = ((estimates < low) | (estimates > high)).any(axis=1) & finite
    flags[outside] |= CatalogFlag.OUTSIDE_DOMAIN
    flags[~(snr >= min_snr)] |= CatalogFlag.LOW_SNR
    flags[bad_fraction > max_bad_fraction] |= CatalogFlag.BAD_PIXELS
    flags[~finite] |= CatalogFlag.FAILED
    return flags
