"""The information ceiling of a spectrum: Fisher matrix and Cramér–Rao bounds.

For a differentiable forward model f(θ) and independent Gaussian pixel noise σ, the Fisher
matrix is I = Jᵀ Σ⁻¹ J with J = ∂f/∂θ (paper 003, Appendix C). The marginal bound of label
i (all other labels free) is √[(I⁻¹)_ii], the Schur-complement bound of eq. C.1; given the
variance of a label over a population, eq. C.2 turns it into the best attainable R².
Works with the built-in generator or any emulator that maps (B, K) labels to (B, L) flux.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .labels import INDEX, LABEL_NAMES


@dataclass(frozen=True)
class FisherResult:
    """matrix: (B, P, P) Fisher matrices for the ``names`` labels; crb: (B, P) marginal
    Cramér–Rao standard deviations in the labels' units."""

    names: tuple[str, ...]
    matrix: np.ndarray
    crb: np.ndarray

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
           mask: np.ndarray | None = None) -> FisherResult:
    """Fisher matrix and marginal Cramér–Rao bounds at ``labels`` (B, K).

    sigma: per-pixel noise (B, L), (L,) or a scalar, in flux units; pixels with infinite
    sigma or a True ``mask`` carry no information. model: labels -> flux (default: the
    generator for 4MOST LRS); names: the labels treated as free (default: all the model's
    labels). Computed in float64.
    """
    if model is None:
        from .generator import SpectrumGenerator
        from .instrument import lrs_instrument

        model = SpectrumGenerator(lrs_instrument())
    x = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels,
                        dtype=torch.float64)
    x = torch.atleast_2d(x)
    names = tuple(names or LABEL_NAMES)
    unknown = [n for n in names if n not in INDEX]
    if unknown:
        raise ValueError(f"unknown label '{unknown[0]}'; choose from {list(LABEL_NAMES)}")
    j = jacobian(model, x, [INDEX[n] for n in names])  # (B, L, P)
    s = torch.as_tensor(np.asarray(sigma, dtype=np.float64)).expand(j.shape[:2])
    ivar = torch.where(torch.isfinite(s) & (s > 0), 1.0 / s.clamp(min=1e-300) ** 2,
                       torch.zeros_like(s))
    if mask is not None:
        ivar = ivar * torch.as_tensor(~np.asarray(mask, dtype=bool))
    info = torch.einsum("blp,bl,blq->bpq", j, ivar, j)
    cov = torch.linalg.pinv(info, hermitian=True)
    crb = torch.sqrt(torch.clamp(torch.diagonal(cov, dim1=1, dim2=2), min=0.0))
    return FisherResult(names=names, matrix=info.numpy(), crb=crb.numpy())
