"""The information ceiling of a spectrum: Fisher matrix and Cramér–Rao bounds.

For a differentiable forward model f(θ) and independent Gaussian pixel noise σ, the Fisher
matrix is I = Jᵀ Σ⁻¹ J with J = ∂f/∂θ (paper 003, Appendix C). The marginal bound of label
i (all other labels free) is √[(I⁻¹)_ii], the Schur-complement bound of eq. C.1; given the
variance of a label over a population, eq. C.2 turns it into the best attainable R².
Works with the built-in generator or any emulator that maps (B, K) labels to (B, L) flux.

An analysis that also fits a flux scale or a continuum (a polynomial per arm multiplying
the model) knows less than one given the continuum exactly: :class:`Nuisance` adds those
columns to J (∂(p·f)/∂c_k = f · P_k at p = 1) and the bounds marginalise over them. A label
the spectrum does not constrain (its direction lies in the null space of I) gets an
infinite bound, not the ~0 a pseudo-inverse would give it.

For an efficient unbiased estimator the error over the bound, |θ̂ − θ| / CRB, is |N(0, 1)|:
median 0.674, mean √(2/π) ≈ 0.798 (:data:`EFFICIENT_MEDIAN_RATIO`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..spectra.continuum import legendre_continuum_basis
from .labels import INDEX, LABEL_NAMES

#: median of |error| / CRB for an efficient unbiased estimator (the median of |N(0, 1)|)
EFFICIENT_MEDIAN_RATIO = 0.6745
#: eigenvalues below this fraction of the largest (of the unit-diagonal Fisher matrix) are
#: directions the spectrum does not constrain
NULL_TOLERANCE = 1e-10


@dataclass(frozen=True)
class Nuisance:
    """What the analysis fits besides the labels it reports: ``labels`` (model inputs such
    as ``rv`` fitted and marginalised), ``continuum_degree`` −1 for no continuum freedom, 0
    for a flux scale per arm, d for a degree-d Legendre polynomial per arm (in wavelength
    scaled to [−1, 1] over the arm). ``arm_pixels``: the pixel indices of each arm
    (default: the generator's arms, else one arm of all pixels)."""

    continuum_degree: int = -1
    labels: tuple[str, ...] = ()
    arm_pixels: tuple[np.ndarray, ...] | None = None

    def columns(self, flux: torch.Tensor) -> torch.Tensor:
        """(B, L, C) derivatives of the flux with respect to the continuum coefficients at
        the identity continuum (each column: the flux times one basis polynomial)."""
        if self.continuum_degree < 0:
            return flux.new_zeros(*flux.shape, 0)
        arms = self.arm_pixels or (np.arange(flux.shape[1]),)
        basis = legendre_continuum_basis([len(p) for p in arms], self.continuum_degree)
        order = np.concatenate([np.asarray(p) for p in arms])
        placed = np.zeros((flux.shape[1], basis.shape[1]))
        placed[order] = basis
        return flux[:, :, None] * torch.as_tensor(placed, dtype=flux.dtype,
                                                  device=flux.device)[None]


def arms_of(model: Callable[[torch.Tensor], torch.Tensor]) -> tuple[np.ndarray, ...] | None:
    """The pixel indices of each arm of the built-in generator's grid (None for models
    without an instrument)."""
    instrument = getattr(model, "instrument", None)
    if instrument is None:
        return None
    sizes = [arm.npix for arm in instrument.pixel_grid().arms]
    edges = np.cumsum([0, *sizes])
    return tuple(np.arange(a, b) for a, b in zip(edges[:-1], edges[1:]))


def bounds_from_information(info: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P, P) Fisher matrices -> (marginal bounds (B, P), unconstrained (B, P) bool):
    √ of the diagonal of the inverse on the constrained subspace, ∞ where a parameter has
    a component along a null direction."""
    scale = torch.sqrt(torch.clamp(torch.diagonal(info, dim1=1, dim2=2), min=0.0))
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    unit = info / safe[:, :, None] / safe[:, None, :]
    values, vectors = torch.linalg.eigh(unit)
    null = values < NULL_TOLERANCE * values.amax(dim=1, keepdim=True).clamp(min=1e-300)
    weight = torch.where(null, torch.zeros_like(values), 1.0 / torch.where(
        null, torch.ones_like(values), values))
    cov_unit = torch.einsum("bpk,bk,bqk->bpq", vectors, weight, vectors)
    along_null = (vectors.abs() * null[:, None, :]).amax(dim=2) > 1e-6
    unconstrained = along_null | (scale == 0)
    crb = torch.sqrt(torch.clamp(torch.diagonal(cov_unit, dim1=1, dim2=2), min=0.0)) / safe
    return torch.where(unconstrained, torch.full_like(crb, math.inf), crb), unconstrained


@dataclass(frozen=True)
class FisherResult:
    """matrix: (B, P, P) Fisher matrices for the ``names`` labels (nuisance columns
    excluded); crb: (B, P) marginal Cramér–Rao standard deviations in the labels' units,
    nuisances marginalised, ∞ where ``unconstrained``."""

    names: tuple[str, ...]
    matrix: np.ndarray
    crb: np.ndarray
    unconstrained: np.ndarray

    def r2_ceiling(self, label_std: dict[str, float]) -> dict[str, np.ndarray]:
        """Eq. C.2 per spectrum: 1 − CRB² / Var(label) for each label with a given spread."""
        return {n: 1.0 - self.crb[:, i] ** 2 / label_std[n] ** 2
                for i, n in enumerate(self.names) if n in label_std}


def jacobian(model: Callable[[torch.Tensor], torch.Tensor], labels: torch.Tensor,
             columns: Sequence[int]) -> torch.Tensor:
    """∂f/∂θ for each spectrum, (B, L, P), by forward-mode autodiff: one Jacobian-vector
    product per label column, all spectra at once (spectra are independent)."""
    out = []
    for k in columns:
        tangent = torch.zeros_like(labels)
        tangent[:, k] = 1.0
        _, jv = torch.func.jvp(model, (labels,), (tangent,))
        out.append(jv)
    return torch.stack(out, dim=-1)


def fisher(labels: torch.Tensor | np.ndarray, sigma: torch.Tensor | np.ndarray | float,
           model: Callable[[torch.Tensor], torch.Tensor] | None = None,
           names: Sequence[str] | None = None,
           mask: np.ndarray | None = None,
           nuisance: Nuisance | None = None) -> FisherResult:
    """Fisher matrix and marginal Cramér–Rao bounds at ``labels`` (B, K).

    sigma: per-pixel noise (B, L), (L,) or a scalar, in flux units; pixels with infinite
    sigma or a True ``mask`` carry no information. model: labels -> flux (default: the
    generator for 4MOST LRS); names: the labels treated as free (default: all the model's
    labels); nuisance: the continuum freedom of the analysis (default: none; its arms
    default to the generator's). Computed in float64.
    """
    if model is None:
        from .generator import SpectrumGenerator
        from .instrument import lrs_instrument

        model = SpectrumGenerator(lrs_instrument())
    x = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels,
                        dtype=torch.float64)
    x = torch.atleast_2d(x)
    names = tuple(names or LABEL_NAMES)
    nuisance = nuisance or Nuisance()
    fitted = [*names, *(n for n in nuisance.labels if n not in names)]
    unknown = [n for n in fitted if n not in INDEX]
    if unknown:
        raise ValueError(f"unknown label '{unknown[0]}'; choose from {list(LABEL_NAMES)}")
    j = jacobian(model, x, [INDEX[n] for n in fitted])  # (B, L, P + nuisance labels)
    if nuisance.continuum_degree >= 0:
        if nuisance.arm_pixels is None:
            nuisance = Nuisance(nuisance.continuum_degree, nuisance.labels, arms_of(model))
        with torch.no_grad():
            j = torch.cat([j, nuisance.columns(model(x))], dim=-1)
    s = torch.as_tensor(np.asarray(sigma, dtype=np.float64)).expand(j.shape[:2])
    ivar = torch.where(torch.isfinite(s) & (s > 0), 1.0 / s.clamp(min=1e-300) ** 2,
                       torch.zeros_like(s))
    if mask is not None:
        ivar = ivar * torch.as_tensor(~np.asarray(mask, dtype=bool))
    info = torch.einsum("blp,bl,blq->bpq", j, ivar, j)
    crb, unconstrained = bounds_from_information(info)
    p = len(names)
    return FisherResult(names=names, matrix=info[:, :p, :p].numpy(), crb=crb[:, :p].numpy(),
                        unconstrained=unconstrained[:, :p].numpy())
