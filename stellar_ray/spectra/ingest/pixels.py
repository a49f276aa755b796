"""Per-pixel conventions of the file formats: inverse variances and quality flags."""

from __future__ import annotations

import numpy as np

from ..schema import MaskBit


def sigma_from_ivar(ivar: np.ndarray) -> np.ndarray:
    """σ = 1/√ivar; +inf where ivar ≤ 0 (no information)."""
    ivar = np.asarray(ivar, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), np.inf)


def mask_from_quality(qual: np.ndarray, bad_bits: int | None = None) -> np.ndarray:
    """Quality flags -> MaskBit.BAD_PIXEL: any non-zero value (ESO Phase 3: QUAL = 0 is good),
    or only the ``bad_bits`` of a bitmask."""
    q = np.asarray(qual).astype(np.int64)
    bad = (q & bad_bits) != 0 if bad_bits is not None else q != 0
    return np.where(bad, np.uint8(MaskBit.BAD_PIXEL), np.uint8(0))


def sigma_and_mask_from_ivar(ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(σ, mask) from an inverse variance: pixels with ivar ≤ 0 carry no information and are
    masked as bad."""
    ivar = np.asarray(ivar, dtype=np.float64)
    return sigma_from_ivar(ivar), mask_from_quality(~(ivar > 0))
