"""The paper-003 baselines: BiLSTM on patch tokens, ResNet-18-1D and a StarNet-like deep
CNN (§3.6)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .regressor import SpectrumRegressor


class BiLSTMRegressor(SpectrumRegressor):
    """Conv1D patch tokenizer (patch 16) -> three-layer BiLSTM -> the final forward and
    backward hidden states -> head."""

    def __init__(self, n_labels: int = 1, n_pix: int = 4096, patch: int = 16, d: int = 256,
                 hidden: int = 256, layers: int = 3, dropout: float = 0.0) -> None:
        super().__init__(n_labels, 2 * hidden)
        self.tokenizer = nn.Conv1d(1, d, patch, patch)
        self.lstm = nn.LSTM(d, hidden, layers, batch_first=True, bidirectional=True,
                            dropout=dropout)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.tokenizer(x[:, None]).transpose(1, 2)
        _, (h, _) = self.lstm(tokens)
        return torch.cat([h[-2], h[-1]], dim=1)


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm1d(c_out),
            nn.ReLU(inplace=True), nn.Conv1d(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm1d(c_out))
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv1d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm1d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet1D(SpectrumRegressor):
    """ResNet-18 in one dimension: stem, four stages of two basic blocks (widths 72, 144,
    288, 576), global average pooling, head."""

    def __init__(self, n_labels: int = 1, n_pix: int = 4096,
                 widths: Sequence[int] = (72, 144, 288, 576), blocks: int = 2) -> None:
        super().__init__(n_labels, widths[-1])
        layers: list[nn.Module] = [nn.Conv1d(1, widths[0], 7, 2, 3, bias=False),
                                   nn.BatchNorm1d(widths[0]), nn.ReLU(inplace=True),
                                   nn.MaxPool1d(3, 2, 1)]
        c_in = widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks):
                layers.append(_BasicBlock(c_in, w, 2 if (i > 0 and j == 0) else 1))
                c_in = w
        layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x[:, None])


class DeepCNN(SpectrumRegressor):
    """StarNet extended to eight convolutional layers with batch norm, ReLU and max-pooling
    after every second layer, then two dense layers."""

    def __init__(self, n_labels: int = 1, n_pix: int = 4096,
                 channels: Sequence[int] = (32, 32, 64, 64, 128, 128, 256, 256),
                 kernel: int = 7, pool: int = 4, pooled: int = 16,
                 dense: Sequence[int] = (864, 256)) -> None:
        super().__init__(n_labels, dense[-1])
        layers: list[nn.Module] = []
        c_in = 1
        for i, c in enumerate(channels):
            layers += [nn.Conv1d(c_in, c, kernel, padding="same"), nn.BatchNorm1d(c),
                       nn.ReLU(inplace=True)]
            if i % 2 == 1:
                layers.append(nn.MaxPool1d(pool))
            c_in = c
        layers += [nn.AdaptiveMaxPool1d(pooled), nn.Flatten()]
        width = c_in * pooled
        for h in dense:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        self.body = nn.Sequential(*layers)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x[:, None])
