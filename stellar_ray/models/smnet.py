"""SM-Net (paper 000 §4): a spectral emulator in two blocks, with its flux transform and loss.

Lookup block: an embedding of the labels, residual fully connected layers 3 → 4096 → 16384
→ L with linear skip projections of the labels into each layer, a learnable per-pixel
baseline initialised to the training median, and a Softplus of sharpness β (eqs. 1–4).
Refinement block: c = Qx + b along the wavelength axis, a fixed three-channel positional
encoding, parallel convolutions with kernels 7, 15 and 23 (replicate padding, GELU,
dropout), a fusion convolution and a one-channel additive correction (eqs. 5–11).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class _ResidualLayer(nn.Module):
    """h = GELU(LN(W h_in)) + P x: a fully connected layer with a skip projection of the
    labels x (eqs. 1–2)."""

    def __init__(self, width_in: int, width_out: int, n_labels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width_in, width_out)
        self.norm = nn.LayerNorm(width_out)
        self.skip = nn.Linear(n_labels, width_out)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.norm(self.linear(h))) + self.skip(x)


class SMNet(nn.Module):
    """labels (B, n_labels) -> log1p-scaled flux (B, n_pix), non-negative."""

    def __init__(self, n_labels: int = 3, n_pix: int = 11655,
                 widths: Sequence[int] = (4096, 16384), embed: int = 64,
                 channels: int = 32, kernels: Sequence[int] = (7, 15, 23),
                 dropout: float = 0.1, beta: float = 10.0) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(n_labels, embed), nn.GELU())
        layers, width = [], embed
        for w in widths:
            layers.append(_ResidualLayer(width, w, n_labels))
            width = w
        self.layers = nn.ModuleList(layers)
        self.coarse = nn.Linear(width, n_pix)
        self.coarse_skip = nn.Linear(n_labels, n_pix)
        self.baseline = nn.Parameter(torch.zeros(n_pix))
        self.beta = beta
        self.condition = nn.Linear(n_labels, n_pix)  # c = Q x + b
        s = torch.linspace(0.0, 1.0, n_pix)
        self.register_buffer("position", torch.stack(
            [torch.sin(2 * math.pi * s), torch.cos(2 * math.pi * s), s]))
        self.branches = nn.ModuleList(nn.Conv1d(5, channels, k) for k in kernels)
        self.kernels = tuple(kernels)
        self.fusion = nn.Conv1d(channels * len(kernels), channels, 1)
        self.out = nn.Conv1d(channels, 1, 1)
        self.dropout = nn.Dropout(dropout)

    @torch.no_grad()
    def init_baseline(self, scaled_flux: torch.Tensor) -> None:
        """Set the baseline so that Softplus_β(baseline) is the training median (B, L)."""
        med = torch.median(scaled_flux, dim=0).values.clamp(min=1e-4)
        self.baseline.copy_(torch.log(torch.expm1(self.beta * med)) / self.beta)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        h = self.embed(labels)
        for layer in self.layers:
            h = layer(h, labels)
        s0 = F.softplus(self.coarse(h) + self.coarse_skip(labels) + self.baseline,
                        beta=self.beta)
        c = self.condition(labels)
        pos = self.position.to(labels.dtype).expand(labels.shape[0], -1, -1)
        x = torch.cat([s0[:, None], c[:, None], pos], dim=1)  # (B, 5, L)
        feats = [self.dropout(F.gelu(conv(F.pad(x, (k // 2, k // 2), mode="replicate"))))
                 for conv, k in zip(self.branches, self.kernels)]
        h = self.dropout(F.gelu(self.fusion(torch.cat(feats, dim=1))))
        return s0 + self.out(h)[:, 0]


class Log1pFluxScaler(nn.Module):
    """Flux -> log1p(f / s) / log1p(max / s) in [0, 1], zeros kept at zero (paper 000 §2);
    s is a small percentile of the positive training flux, max the training maximum."""

    def __init__(self, scale: float = 1.0, maximum: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("maximum", torch.tensor(float(maximum)))

    @classmethod
    def fit(cls, flux: torch.Tensor, percentile: float = 1.0) -> Log1pFluxScaler:
        positive = flux[flux > 0]
        scale = torch.quantile(positive.float()[:1_000_000], percentile / 100.0)
        return cls(float(scale), float(positive.max()))

    def forward(self, flux: torch.Tensor) -> torch.Tensor:
        return torch.log1p(flux.clamp(min=0) / self.scale) / torch.log1p(self.maximum / self.scale)

    def inverse(self, scaled: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.expm1(scaled * torch.log1p(self.maximum / self.scale))


def masked_weighted_mse(pred: torch.Tensor, target: torch.Tensor,
                        weight: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 12: mean over the batch of Σ_λ w_λ m_iλ (t − s)² / L, with m = 0 where the target
    flux is exactly zero (unknown)."""
    mask = (target != 0).to(pred.dtype)
    w = torch.ones(pred.shape[1], dtype=pred.dtype, device=pred.device) if weight is None \
        else weight
    return (w * mask * (target - pred) ** 2).sum(dim=1).mean() / pred.shape[1]
