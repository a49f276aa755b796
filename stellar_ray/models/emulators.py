"""Emulators of the TransformerPayne paper (paper 002, Appendix A): The Payne and BigPayne.

Both map labels (B, P), scaled to about [−0.5, 0.5], to normalised flux (B, L) through
an MLP with GELU activations and a sigmoid output (listings 1 and 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class PayneMLP(nn.Module):
    """labels (B, n_labels) -> flux (B, n_pix) in (0, 1)."""

    def __init__(self, n_labels: int, n_pix: int, hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_labels
        for h in hidden:
            layers += [nn.Linear(width, h), nn.GELU()]
            width = h
        layers.append(nn.Linear(width, n_pix))
        self.net = nn.Sequential(*layers)
        self.n_labels, self.n_pix = n_labels, n_pix

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(labels))


def the_payne(n_labels: int = 99, n_pix: int = 22315, hidden: Sequence[int] = (128, 128)
              ) -> PayneMLP:
    """The Payne (paper 002, listing 1): two hidden layers of 128."""
    return PayneMLP(n_labels, n_pix, hidden)


def big_payne(n_labels: int = 99, n_pix: int = 22315,
              hidden: Sequence[int] = (2048, 2048, 2048)) -> PayneMLP:
    """BigPayne (paper 002, listing 2): three hidden layers of 2048."""
    return PayneMLP(n_labels, n_pix, hidden)
