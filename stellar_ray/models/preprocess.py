"""Transforms shared by the regressors (paper 003 §3.2): median normalisation with clipping at
zero, unusable pixels filled from their neighbours, heteroscedastic noise injection
x + α ε σ as a training transform, and z-scored labels."""

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


def fill_unusable(flux: torch.Tensor, usable: torch.Tensor) -> torch.Tensor:
    """flux (B, L) with each unusable pixel (``usable`` (B, L) False) replaced by the linear
    interpolation, in pixel index, of its nearest usable neighbours (the nearest one beyond
    the last or before the first; 0 in a row without any)."""
    n = flux.shape[1]
    idx = torch.arange(n, device=flux.device).expand_as(flux)
    prev = torch.where(usable, idx, -1).cummax(dim=1).values
    rev = torch.where(usable, n - 1 - idx, -1).flip(1).cummax(dim=1).values.flip(1)
    nxt = torch.where(rev >= 0, n - 1 - rev, -1)
    f_prev = flux.gather(1, prev.clamp(min=0))
    f_next = flux.gather(1, nxt.clamp(min=0))
    span = (nxt - prev).clamp(min=1).to(flux.dtype)
    between = f_prev + (f_next - f_prev) * (idx - prev).to(flux.dtype) / span
    filled = torch.where((prev >= 0) & (nxt >= 0), between,
                         torch.where(prev >= 0, f_prev,
                                     torch.where(nxt >= 0, f_next, torch.zeros_like(flux))))
    return torch.where(usable, flux, filled)


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
