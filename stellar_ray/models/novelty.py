"""How unlike the training set an input spectrum is: a score for out-of-distribution inputs
that any regressor or posterior model can carry, whatever its architecture.

Fitted on the validation spectra at the end of training (the inputs as the model sees them:
the normalisation's continuum and filling, then divided by their median): the mean and the
leading principal components of the flux, fitted on half of them. An input's score is its
reduced χ² after projection onto them, Σ (x − x̂)² / (σ² + τ²) / n over usable pixels, where
τ² (per pixel) is the variance the components leave unexplained in the other half beyond
their noise — so the score is about 1 for spectra like the training set's at any S/N, and
large for spectra with features it never had (other stellar types, emission lines,
calibration faults). The threshold is the highest score of that other half times a margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: Principal components kept (at most a quarter of the spectra they are fitted on).
COMPONENTS = 16
#: The threshold is this many times the highest held-out score.
THRESHOLD_MARGIN = 1.5


def _relative(flux: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(flux, σ) (B, L) divided by each spectrum's median usable flux (float64)."""
    flux, sigma = flux.double(), sigma.double()
    usable = torch.isfinite(sigma) & (sigma > 0)
    med = torch.nanmedian(torch.where(usable, flux, torch.nan), dim=1, keepdim=True).values
    med = torch.where(torch.isfinite(med) & (med > 0), med, torch.ones_like(med))
    return flux / med, torch.where(usable, sigma / med, torch.full_like(sigma, torch.inf))


def _residual(x: torch.Tensor, mean: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """(B, L) what the mean and components leave of relative flux x (B, L)."""
    centred = x - mean
    return centred - (centred @ components.T) @ components


@dataclass(frozen=True)
class InputNovelty:
    """``mean`` (L,) and ``components`` (C, L) orthonormal, of relative model-input flux;
    ``unexplained`` (L,) τ², their residual variance beyond noise; ``threshold``: scores
    above it are out of distribution."""

    mean: torch.Tensor
    components: torch.Tensor
    unexplained: torch.Tensor
    threshold: float

    @classmethod
    def fit(cls, flux: torch.Tensor, sigma: torch.Tensor, seed: int = 0) -> InputNovelty:
        """From model inputs (B, L) with σ (B, L) (∞: unusable): half the spectra fit the
        components, the other half set the threshold."""
        x, s = _relative(flux, sigma)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        fit, held = order[: len(x) // 2], order[len(x) // 2:]
        mean = x[fit].mean(dim=0)
        k = max(1, min(COMPONENTS, len(fit) // 4))
        _, _, vt = torch.linalg.svd(x[fit] - mean, full_matrices=False)
        components = vt[:k].contiguous()
        resid = _residual(x[held], mean, components)
        usable = torch.isfinite(s[held])
        excess = torch.where(usable, resid**2 - torch.where(usable, s[held], 0.0) ** 2, 0.0)
        unexplained = (excess.sum(0) / usable.sum(0).clamp(min=1)).clamp(min=0.0)
        draft = cls(mean=mean, components=components, unexplained=unexplained,
                    threshold=np.inf)
        held_scores = draft.score(flux[held], sigma[held])
        return cls(mean=mean, components=components, unexplained=unexplained,
                   threshold=float(THRESHOLD_MARGIN * held_scores.max()))

    def score(self, flux: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """(B,) float64 reduced χ² of model inputs (B, L) against the components."""
        x, s = _relative(flux, sigma)
        resid = _residual(x, self.mean.to(x.device, x.dtype),
                          self.components.to(x.device, x.dtype))
        usable = torch.isfinite(s)
        var = torch.where(usable, s, 0.0) ** 2 + self.unexplained.to(x.device, x.dtype)
        chi2 = torch.where(usable, resid**2 / var.clamp(min=1e-30), 0.0).sum(1)
        return chi2 / usable.sum(1).clamp(min=1)

    def tensors(self) -> dict[str, torch.Tensor]:
        """What the artifact stores (``ood.safetensors``)."""
        return {"mean": self.mean.float(), "components": self.components.float(),
                "unexplained": self.unexplained.float(),
                "threshold": torch.tensor([self.threshold], dtype=torch.float64)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> InputNovelty:
        return cls(mean=tensors["mean"].double(), components=tensors["components"].double(),
                   unexplained=tensors["unexplained"].double(),
                   threshold=float(tensors["threshold"][0]))
