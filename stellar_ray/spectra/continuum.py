"""Pseudo-continuum normalisation: each arm's continuum as a smooth upper envelope of the
spectrum, which the spectrum (and its σ) is divided by.

Per arm, a cubic B-spline with knots every ``knot_spacing_a`` Å is fitted by least squares
to the usable pixels; pixels further than ``clip_low`` robust standard deviations below the
fit (absorption lines) or ``clip_high`` above it (cosmics, emission) are left out (σ: the
RMS of the pixels kept, which the clipping makes robust as it goes) and the fit repeated
``iterations`` times, so that it climbs to the continuum over the lines. Every
spectrum of a batch shares the wavelengths, so the B-spline design matrix is built once per
arm and the fits of a whole batch are one batched solve. Unusable pixels (flux 0 or
non-finite, σ not finite) are ignored and stay unusable.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field
from scipy.interpolate import BSpline


class ContinuumConfig(BaseModel):
    """How the pseudo-continuum is found (wavelengths in Å)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    knot_spacing_a: float = Field(default=50.0, gt=0, description="Å between spline knots: "
                                  "longer than a line's wings, shorter than the response's "
                                  "wiggles")
    clip_low: float = Field(default=1.0, gt=0, description="pixels this many σ below "
                            "the fit are left out (absorption)")
    clip_high: float = Field(default=3.0, gt=0, description="and this many above "
                             "(cosmics, emission)")
    iterations: int = Field(default=8, ge=1)


def _knots(wave: np.ndarray, spacing: float) -> np.ndarray:
    lo, hi = float(wave[0]), float(wave[-1])
    inner = max(0, int(np.floor((hi - lo) / spacing)) - 1)
    interior = np.linspace(lo, hi, inner + 2)[1:-1]
    return np.concatenate([[lo] * 4, interior, [hi] * 4])


@lru_cache(maxsize=16)
def _design(wave_bytes: bytes, spacing: float) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The cubic B-spline basis at the arm's wavelengths, (L, n) sparse (four non-zeros a
    row), and its row-wise outer products, (L, n²) sparse: a batch's normal matrices are
    then one product with the (B, L) pixel weights."""
    wave = np.frombuffer(wave_bytes, dtype=np.float64)
    basis = BSpline.design_matrix(wave, _knots(wave, spacing), 3).tocsr()
    n = basis.shape[1]
    rows, cols, vals = [], [], []
    for pixel in range(basis.shape[0]):
        start, stop = basis.indptr[pixel], basis.indptr[pixel + 1]
        idx, val = basis.indices[start:stop], basis.data[start:stop]
        rows.append(np.full(idx.size**2, pixel))
        cols.append((idx[:, None] * n + idx[None, :]).ravel())
        vals.append(np.outer(val, val).ravel())
    outer = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows),
                                                  np.concatenate(cols))),
                          shape=(basis.shape[0], n * n))
    return basis, outer


def _fit_arm(wave: np.ndarray, flux: np.ndarray, usable: np.ndarray, cfg: ContinuumConfig
             ) -> np.ndarray:
    """(B, L) continuum of one arm's flux (B, L), from its ``usable`` pixels."""
    basis, outer = _design(np.ascontiguousarray(wave, dtype=np.float64).tobytes(),
                           cfg.knot_spacing_a)
    n = basis.shape[1]
    keep = usable.astype(np.float64)
    ridge = 1e-9 * np.eye(n)  # knots over gaps without data stay defined
    continuum = np.ones_like(flux)
    for _ in range(cfg.iterations):
        gram = (outer.T @ keep.T).T.reshape(-1, n, n) + ridge
        rhs = (basis.T @ (keep * flux).T).T
        coef = np.linalg.solve(gram, rhs[..., None])[..., 0]
        continuum = (basis @ coef.T).T
        resid = np.where(usable, flux - continuum, 0.0)
        # the scatter of the pixels still kept: clipping makes it robust as it iterates
        scale = np.sqrt((keep * resid**2).sum(1, keepdims=True)
                        / np.maximum(keep.sum(1, keepdims=True), 1.0))
        scale = np.where(scale > 0, scale, np.inf)
        keep = (usable & (resid > -cfg.clip_low * scale) & (resid < cfg.clip_high * scale)
                ).astype(np.float64)
    return continuum


def fit_continuum(wave: np.ndarray, flux: np.ndarray, sigma: np.ndarray,
                  arm_npix: Sequence[int], cfg: ContinuumConfig) -> np.ndarray:
    """(B, L) pseudo-continuum of ``flux`` (B, L) at ``wave`` (L,) Å; ``arm_npix``: the
    pixels of each arm, in order (each arm is fitted on its own)."""
    flux = np.asarray(flux, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    usable = np.isfinite(flux) & (flux != 0) & np.isfinite(sigma)
    out = np.ones_like(flux)
    edges = np.cumsum([0, *arm_npix])
    if edges[-1] != flux.shape[1]:
        raise ValueError(f"arms of {list(arm_npix)} pixels do not make the spectra's "
                         f"{flux.shape[1]}")
    for a, b in zip(edges[:-1], edges[1:]):
        out[:, a:b] = _fit_arm(wave[a:b], np.where(usable[:, a:b], flux[:, a:b], 0.0),
                               usable[:, a:b], cfg)
    return out


def divide_by_continuum(wave: np.ndarray, flux: np.ndarray, sigma: np.ndarray,
                        arm_npix: Sequence[int], cfg: ContinuumConfig
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(flux, σ) divided by the pseudo-continuum, float32; unusable pixels stay flux 0,
    σ ∞ (as do pixels where the continuum is not positive)."""
    continuum = fit_continuum(wave, flux, sigma, arm_npix, cfg)
    ok = np.isfinite(flux) & (flux != 0) & np.isfinite(sigma) & (continuum > 0)
    safe = np.where(ok, continuum, 1.0)
    return (np.where(ok, flux / safe, 0.0).astype(np.float32),
            np.where(ok, sigma / safe, np.inf).astype(np.float32))


def legendre_continuum_basis(arm_npix: Sequence[int], degree: int) -> np.ndarray:
    """(L, A·(degree + 1)) float64: per arm (``arm_npix`` pixels each, in order), the
    Legendre polynomials P_0..P_degree of the pixel index scaled to [−1, 1] over the arm,
    zero outside it: the design of a smooth multiplicative continuum per arm."""
    n_pix = int(sum(arm_npix))
    out = np.zeros((n_pix, len(arm_npix) * (degree + 1)))
    start = 0
    for a, n in enumerate(arm_npix):
        columns = slice(a * (degree + 1), (a + 1) * (degree + 1))
        out[start:start + n, columns] = np.polynomial.legendre.legvander(
            np.linspace(-1.0, 1.0, n), degree)
        start += n
    return out
