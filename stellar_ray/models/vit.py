"""SpecViT and its relatives (paper 003 §3.3–3.6).

* SpecViT: Conv1D patch tokenizer (patch 16), a CLS token, learned absolute positions, a
  pre-norm transformer encoder (D = 256, H = 8, 6 layers), the CLS output to the head.
* OverlapViT: the same with overlapping patches (kernel 32, stride 16).
* ConvStem+LSTM: a four-layer convolutional stem 1→32→64→128→256 with total stride 16
  (31-pixel receptive field), one BiLSTM layer (h = 128) joined by a residual and a
  LayerNorm (eq. 12), then a five-layer encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .regressor import SpectrumRegressor


def n_tokens(n_pix: int, kernel: int, stride: int) -> int:
    return (n_pix - kernel) // stride + 1


class PreNormLayer(nn.Module):
    """A pre-norm transformer encoder layer on (B, N, D) tokens: ``x + attn(norm1(x))``,
    then ``+ linear2(gelu(linear1(norm2(x))))`` (4·D wide), with the same parameters and
    names as ``nn.TransformerEncoderLayer(norm_first=True, activation="gelu")``.

    Written out so that attention is one fused ``scaled_dot_product_attention`` call (flash
    attention on CPU and GPU) in training and inference alike: torch's own layer runs a
    separate fused "fast path" in inference whose attention is slower on CPU (SpecViT at
    batch 64 here: 38 against 44 GFLOP/s) and which ``torch.compile`` cannot trace."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout_p = dropout
        self.self_attn = nn.MultiheadAttention(d, heads, batch_first=True)  # weights only
        self.linear1, self.linear2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        attn = self.self_attn
        qkv = F.linear(self.norm1(x), attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout_p if self.training else 0.0)
        x = x + self.dropout(attn.out_proj(a.transpose(1, 2).reshape(b, n, d)))
        h = self.dropout(F.gelu(self.linear1(self.norm2(x))))
        return x + self.dropout(self.linear2(h))


class _Layers(nn.Module):
    """The layer stack (its own module so the parameter names stay ``encoder.layers.i``)."""

    def __init__(self, d: int, heads: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(PreNormLayer(d, heads, dropout) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class TokenEncoder(nn.Module):
    """CLS token + learned positions + a pre-norm transformer encoder: (B, N, D) -> (B, D)."""

    def __init__(self, n: int, d: int, heads: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.encoder = _Layers(d, heads, layers, dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        cls = self.cls.expand(tokens.shape[0], -1, -1)
        z = torch.cat([cls, tokens], dim=1) + self.pos
        return self.norm(self.encoder(z))[:, 0]


class SpecViT(SpectrumRegressor):
    """flux (B, n_pix) -> z-scored labels (B, n_labels)."""

    def __init__(self, n_labels: int = 1, n_pix: int = 4096, patch: int = 16,
                 stride: int | None = None, d: int = 256, heads: int = 8, layers: int = 6,
                 dropout: float = 0.0) -> None:
        super().__init__(n_labels, d)
        stride = stride or patch
        self.tokenizer = nn.Conv1d(1, d, patch, stride)
        self.encoder = TokenEncoder(n_tokens(n_pix, patch, stride), d, heads, layers, dropout)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.tokenizer(x[:, None]).transpose(1, 2))


def overlap_vit(n_labels: int = 1, n_pix: int = 4096, d: int = 256, heads: int = 8,
                layers: int = 6, dropout: float = 0.0) -> SpecViT:
    """OverlapViT: SpecViT with kernel-32, stride-16 patches."""
    return SpecViT(n_labels, n_pix, patch=32, stride=16, d=d, heads=heads, layers=layers,
                   dropout=dropout)


class ConvStemLSTM(SpectrumRegressor):
    """flux (B, n_pix) -> z-scored labels (B, n_labels)."""

    def __init__(self, n_labels: int = 1, n_pix: int = 4096, d: int = 256,
                 stem: tuple[int, ...] = (32, 64, 128), lstm_hidden: int = 128, heads: int = 8,
                 layers: int = 5, dropout: float = 0.0) -> None:
        super().__init__(n_labels, d)
        convs: list[nn.Module] = []
        width = 1
        for out in (*stem, d):
            convs += [nn.Conv1d(width, out, 3, stride=2, padding=1), nn.GELU()]
            width = out
        self.stem = nn.Sequential(*convs[:-1])  # no activation after the last projection
        self.lstm = nn.LSTM(d, lstm_hidden, batch_first=True, bidirectional=True)
        self.project = nn.Linear(2 * lstm_hidden, d)
        self.join = nn.LayerNorm(d)
        n = n_pix
        for _ in range(len(stem) + 1):
            n = (n + 1) // 2
        self.encoder = TokenEncoder(n, d, heads, layers, dropout)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        e = self.stem(x[:, None]).transpose(1, 2)  # (B, N, D)
        context, _ = self.lstm(e)
        return self.encoder(self.join(e + self.project(context)))
