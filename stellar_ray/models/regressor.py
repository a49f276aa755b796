"""What every neural regressor shares: flux (B, L) -> median-normalised input -> an encoder
summary (B, D) -> a linear head -> z-scored labels (B, K). The cINN reuses ``encode`` as
its conditioning network."""

from __future__ import annotations

import torch
from torch import nn

from .preprocess import median_normalise


class SpectrumRegressor(nn.Module):
    """Base class: subclasses set ``summary_dim`` and implement :meth:`encode`."""

    summary_dim: int

    def __init__(self, n_labels: int, summary_dim: int) -> None:
        super().__init__()
        self.summary_dim = summary_dim
        self.head = nn.Linear(summary_dim, n_labels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised spectra (B, L) -> summary (B, summary_dim)."""
        raise NotImplementedError

    def forward(self, flux: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """Flux (B, L) in any units -> z-scored labels (B, n_labels). ``sigma`` is accepted
        for a uniform interface; noise injection happens in training, not here."""
        x, _ = median_normalise(flux)
        return self.head(self.encode(x))
