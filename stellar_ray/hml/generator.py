"""The HML generator (paper 001 §3): every identified line's (μ, ln a, σ, γ) and the
continuum polynomial interpolated over the labels, the spectrum rebuilt from them.

Interpolation runs in z-scored labels, either ``linear`` on a rectilinear grid (as the
paper, with scipy's RegularGridInterpolator; here in torch so that it is differentiable and
runs on the GPU; queries outside the grid take the nearest cell's edge) or ``rbf``, a
thin-plate-spline radial basis function with a linear term through the nodes of any grid
(smooth, for irregular grids). Lines whose interpolated ln a falls below −100 add nothing
(paper 001 §3.2). The spectrum is blackbody × polynomial per arm × exp(−Σ lines).

The per-node values are laid out in one (G, D) table, D = 4·N + M: line-centre offsets from
each line's reference wavelength (Å), ln a, σ, γ (Å) for N lines, then M continuum
coefficients.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from ..spectra.continuum import legendre_continuum_basis
from .continuum import relative_blackbody
from .voigt import optical_depth

#: Interpolated lines with ln a below this are left out (paper 001 §3.2).
ABSENT_LN_A = -100.0


def thin_plate(r: torch.Tensor) -> torch.Tensor:
    """φ(r) = r² ln r, 0 at r = 0."""
    return torch.where(r > 0, r.square() * torch.log(r.clamp_min(1e-300)), torch.zeros_like(r))


class HMLGenerator(nn.Module):
    """Labels (B, K) z-scored → flux (B, L) in the grid's unit.

    ``axes``: the z-scored grid values of each label (``linear``); ``n_nodes``: the number
    of grid points (``rbf``); ``n_lines``; ``arm_npix``: pixels per arm (L in all);
    ``continuum_degree``; ``wing_pixels``: half-width of each line's window; ``teff``:
    (index, mean, std) of Teff among the labels when the blackbody is part of the model.
    Buffers (from the artifact): ``wave`` (L,) Å, ``mu_ref`` (N,) Å, ``values`` (G, D) the
    node values (``linear``) or RBF weights (``rbf``), ``nodes`` (G, K) and ``poly``
    (K + 1, D) (``rbf``)."""

    def __init__(self, n_labels: int = 1, n_lines: int = 1, arm_npix: tuple[int, ...] = (8,),
                 continuum_degree: int = 0, wing_pixels: int = 4,
                 interpolation: str = "linear",
                 axes: list[list[float]] | None = None, n_nodes: int | None = None,
                 teff: tuple[int, float, float] | None = None) -> None:
        super().__init__()
        if interpolation not in ("linear", "rbf"):
            raise ValueError(f"interpolation '{interpolation}': expected linear or rbf")
        self.interpolation = interpolation
        self.n_lines = n_lines
        self.wing_pixels = wing_pixels
        self.teff = tuple(teff) if teff is not None else None
        n_pix = int(sum(arm_npix))
        basis = legendre_continuum_basis(list(arm_npix), continuum_degree)
        self.n_continuum = basis.shape[1]
        width = 4 * n_lines + self.n_continuum
        if interpolation == "linear":
            axes = axes or [[0.0, 1.0]] * n_labels
            if len(axes) != n_labels:
                raise ValueError(f"{len(axes)} axes for {n_labels} labels")
            self.axes = [torch.tensor(a, dtype=torch.float64) for a in axes]
            sizes = [len(a) for a in axes]
            self.strides = [int(np.prod(sizes[k + 1:])) for k in range(n_labels)]
            n_nodes = int(np.prod(sizes))
            corners = torch.tensor(list(itertools.product((0, 1), repeat=n_labels)))
            self.register_buffer("corners", corners, persistent=False)
        else:
            n_nodes = n_nodes or 1
            self.register_buffer("nodes", torch.zeros(n_nodes, n_labels))
            self.register_buffer("poly", torch.zeros(n_labels + 1, width))
        self.register_buffer("wave", torch.linspace(1.0, 2.0, n_pix, dtype=torch.float64))
        self.register_buffer("mu_ref", torch.zeros(n_lines, dtype=torch.float64))
        self.register_buffer("values", torch.zeros(n_nodes, width))
        self.register_buffer("basis", torch.as_tensor(basis, dtype=torch.float32),
                             persistent=False)

    # -- interpolation ----------------------------------------------------------------
    def _linear(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D) multilinear interpolation of ``values`` at z (B, K), clamped to the grid."""
        index, frac = [], []
        for k, axis in enumerate(self.axes):
            axis = axis.to(z.device, z.dtype)
            i = (torch.searchsorted(axis, z[:, k].detach().contiguous()) - 1).clamp(
                0, axis.numel() - 2)
            t = ((z[:, k] - axis[i]) / (axis[i + 1] - axis[i])).clamp(0, 1)
            index.append(i)
            frac.append(t)
        idx, t = torch.stack(index, 1), torch.stack(frac, 1)  # (B, K)
        corners = self.corners.to(z.device)  # (C, K)
        strides = torch.tensor(self.strides, device=z.device)
        flat = ((idx[:, None, :] + corners[None]) * strides).sum(-1)  # (B, C)
        weight = torch.where(corners[None].bool(), t[:, None, :], 1 - t[:, None, :]).prod(-1)
        return (weight[:, :, None].to(self.values.dtype) * self.values[flat]).sum(1)

    def _rbf(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D) thin-plate-spline interpolation at z (B, K)."""
        zz = z.to(self.values.dtype)
        r = torch.cdist(zz, self.nodes.to(zz.dtype))
        linear = torch.cat([torch.ones_like(zz[:, :1]), zz], 1)
        return thin_plate(r) @ self.values + linear @ self.poly

    def line_parameters(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D) the interpolated node values at z-scored labels (B, K)."""
        return self._linear(z) if self.interpolation == "linear" else self._rbf(z)

    # -- the spectrum -----------------------------------------------------------------
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        p = self.line_parameters(z)
        n = self.n_lines
        ln_a = p[:, n:2 * n]
        present = ln_a > ABSENT_LN_A
        active = present.any(0)  # lines absent at every query are not evaluated
        if not bool(active.all()):
            keep = torch.nonzero(active).squeeze(1)
            p_lines = p[:, :4 * n].reshape(-1, 4, n)[:, :, keep]
            mu_ref, present = self.mu_ref[keep], present[:, keep]
        else:
            p_lines, mu_ref = p[:, :4 * n].reshape(-1, 4, n), self.mu_ref
        mu = mu_ref.to(torch.float64) + p_lines[:, 0].to(torch.float64)
        tau = optical_depth(self.wave, mu, p_lines[:, 1], p_lines[:, 2].clamp_min(1e-6),
                            p_lines[:, 3].clamp_min(0.0), self.wing_pixels,
                            present.to(p.dtype))
        flux = torch.exp(-tau) * (p[:, 4 * n:] @ self.basis.to(p.dtype).T)
        if self.teff is not None:
            index, mean, std = self.teff
            teff = z[:, int(index)] * std + mean
            flux = flux * relative_blackbody(self.wave, teff.to(torch.float64)).to(flux.dtype)
        return flux
