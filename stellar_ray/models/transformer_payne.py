"""TransformerPayne (paper 002 §3.1, listing 4): flux at any wavelength given labels.

The wavelength query is a sinusoidal encoding of log10 λ with ``d`` periods log-spaced
from 1e-6 to 10; the labels become ``n_tokens`` tokens of width ``d`` through a two-layer
MLP and a LayerNorm; ``depth`` blocks of multi-head cross-attention (query: the wavelength
stream, keys and values: the label tokens) and a ×4 GELU feed-forward, with the ResiDual
arrangement of residuals and norms (a post-norm stream plus an un-normalised pre-norm
accumulator, joined by a final LayerNorm); an MLP head gives one flux per wavelength.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def frequency_encoding(log_wave: torch.Tensor, dim: int, min_period: float = 1e-6,
                       max_period: float = 10.0) -> torch.Tensor:
    """sin(2π x / p) for ``dim`` periods p log-spaced in [min_period, max_period]:
    (...,) -> (..., dim)."""
    periods = torch.logspace(math.log10(min_period), math.log10(max_period), dim,
                             dtype=log_wave.dtype, device=log_wave.device)
    return torch.sin(2 * math.pi / periods * log_wave[..., None])


class _Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm_attn = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.norm_ff = nn.LayerNorm(d)

    def forward(self, x_post: torch.Tensor, x_pre: torch.Tensor, tokens: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        # As listing 4: each sub-layer's residual sum feeds both the post-norm stream (after
        # a LayerNorm) and the un-normalised accumulator.
        a, _ = self.attn(x_post, tokens, tokens, need_weights=False)
        a = a + x_post
        x_post, x_pre = self.norm_attn(a), x_pre + a
        f = self.ff(x_post) + x_post
        x_post, x_pre = self.norm_ff(f), x_pre + f
        return x_post, x_pre


class TransformerPayne(nn.Module):
    """labels (B, n_labels) and wavelengths (B, M) or (M,) in Å -> flux (B, M).

    Without wavelengths it evaluates the ``wavelength`` grid given at construction.
    """

    def __init__(self, n_labels: int = 99, d: int = 256, n_tokens: int = 16, depth: int = 16,
                 heads: int = 8, wavelength: torch.Tensor | None = None) -> None:
        super().__init__()
        self.d, self.n_tokens = d, n_tokens
        self.embed = nn.Sequential(nn.Linear(n_labels, 4 * d), nn.GELU(),
                                   nn.Linear(4 * d, n_tokens * d))
        self.token_norm = nn.LayerNorm(d)
        self.blocks = nn.ModuleList(_Block(d, heads) for _ in range(depth))
        self.final_norm = nn.LayerNorm(d)
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        grid = torch.empty(0) if wavelength is None else torch.as_tensor(wavelength,
                                                                          dtype=torch.float32)
        self.register_buffer("wavelength", grid)

    def forward(self, labels: torch.Tensor, wave: torch.Tensor | None = None) -> torch.Tensor:
        if wave is None:
            if self.wavelength.numel() == 0:
                raise ValueError("TransformerPayne needs wavelengths (none given at build)")
            wave = self.wavelength
        b = labels.shape[0]
        if wave.dim() == 1:
            wave = wave[None, :].expand(b, -1)
        tokens = self.token_norm(self.embed(labels).view(b, self.n_tokens, self.d))
        # Each wavelength is its own one-token query: cross-attention, norms and the
        # feed-forward act per position, so the M queries of a spectrum share one pass.
        query = frequency_encoding(torch.log10(wave.to(labels.dtype)), self.d)  # (B, M, d)
        x_post, x_pre = query, query
        for block in self.blocks:
            x_post, x_pre = block(x_post, x_pre, tokens)
        out = self.head(self.final_norm(x_pre + x_post))
        return out.squeeze(-1)


def random_wavelength_subset(wave: torch.Tensor, batch: int, size: int,
                             generator: torch.Generator | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Training helper: ``size`` random pixel indices per spectrum, (B, size), and their
    wavelengths, for a grid ``wave`` (L,)."""
    idx = torch.argsort(torch.rand(batch, wave.numel(), generator=generator), dim=1)[:, :size]
    return idx, wave[idx]
