"""Transforms shared by the regressors (paper 003 §3.2): median normalisation with clipping at
zero, heteroscedastic noise injection x + α ε σ as a training transform, and z-scored labels."""

from __future__ import annotations

import torch


def median_normalise(flux: torch.Tensor, sigma: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """flux (B, L) / its median over positive pixels, clipped at 0; sigma scaled alike."""
    positive = torch.where(flux > 0, flux, torch.full_like(flux, float("nan")))
    med = torch.nanmedian(positive, dim=1, keepdim=True).values
    med = torch.where(torch.isfinite(med) & (med > 0), med, torch.ones_like(med))
    x = torch.clamp(flux / med, min=0.0)
    return x, None if sigma is None else sigma / med


def inject_noise(x: torch.Tensor, sigma: torch.Tensor, alpha: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """x + α ε σ with ε ~ N(0, 1) per pixel (eq. 3); pixels with non-finite sigma are kept."""
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    noise = torch.where(torch.isfinite(sigma), alpha * eps * sigma, torch.zeros_like(x))
    return x + noise


class LabelScaler(torch.nn.Module):
    """z-scoring of labels with training-set statistics (paper 003 eq. 16): (B, K) <-> (B, K).
    Buffers, so a saved model carries its scaling."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    @classmethod
    def fit(cls, labels: torch.Tensor) -> LabelScaler:
        """Statistics of ``labels`` (N, K), ignoring NaN (unknown) values."""
        labels = torch.as_tensor(labels, dtype=torch.float32)
        mean = torch.nanmean(labels, dim=0)
        std = torch.sqrt(torch.nanmean((labels - mean) ** 2, dim=0))
        return cls(mean, torch.where(std > 0, std, torch.ones_like(std)))

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return (labels - self.mean) / self.std

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean
