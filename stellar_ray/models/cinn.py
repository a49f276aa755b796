"""A conditional invertible network for posteriors (paper 004): a normalizing flow between
the labels (z-scored) and a standard Gaussian latent, conditioned on a learned summary of
the spectrum.

The flow is zuko's neural spline flow (coupling-free autoregressive rational-quadratic
transforms, conditioned on a context vector; :mod:`.spline_flow` samples it cheaply); the
summary comes from the encoder of any regressor of the zoo (default: ConvStem+LSTM) or, for
vector data, an MLP. Trained by maximum likelihood (:meth:`CINN.forward` returns
log p(labels | spectrum)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .preprocess import median_normalise
from .regressor import SpectrumRegressor
from .spline_flow import SplineFlow


class MLPSummary(nn.Module):
    """Conditioning network for vector observations (B, n_in) -> (B, d); no normalisation."""

    def __init__(self, n_in: int, d: int = 64, hidden: int = 128) -> None:
        super().__init__()
        self.summary_dim = d
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _EncoderSummary(nn.Module):
    """A regressor's normalisation + encoder as a conditioning network."""

    def __init__(self, regressor: SpectrumRegressor) -> None:
        super().__init__()
        self.regressor = regressor
        self.summary_dim = regressor.summary_dim

    def forward(self, flux: torch.Tensor) -> torch.Tensor:
        x, _ = median_normalise(flux)
        return self.regressor.encode(x)


class CINN(nn.Module):
    """Posterior p(labels | spectrum) for z-scored labels (B, n_labels)."""

    def __init__(self, summary: nn.Module, n_labels: int = 6, transforms: int = 6,
                 hidden: Sequence[int] = (256, 256), bins: int = 8) -> None:
        super().__init__()
        self.summary = summary
        self.n_labels = n_labels
        self.flow = SplineFlow(n_labels, summary.summary_dim, transforms, bins, hidden)

    def forward(self, flux: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """log p(labels | flux): (B,)."""
        return self.flow(self.summary(flux)).log_prob(labels)

    @torch.no_grad()
    def sample(self, flux: torch.Tensor, n: int) -> torch.Tensor:
        """Posterior draws (n, B, n_labels)."""
        return self.flow(self.summary(flux)).sample((n,))

    @torch.no_grad()
    def posterior(self, flux: torch.Tensor, n: int = 256,
                  quantiles: Sequence[float] = (0.16, 0.5, 0.84)) -> dict[str, torch.Tensor]:
        """Mean, standard deviation (B, K) and quantiles (Q, B, K) from ``n`` draws."""
        draws = self.sample(flux, n)
        q = torch.tensor(list(quantiles), dtype=draws.dtype, device=draws.device)
        return {"mean": draws.mean(0), "std": draws.std(0),
                "quantiles": torch.quantile(draws, q, dim=0)}


def build_cinn(n_labels: int = 6, n_pix: int = 4096, condition: str = "convstem_lstm",
               condition_config: dict | None = None, transforms: int = 6,
               hidden: Sequence[int] = (256, 256), bins: int = 8) -> CINN:
    """A cINN whose conditioning network is the encoder of the regressor ``condition`` (its
    own head unused) or ``'mlp'`` for vector inputs of length ``n_pix``."""
    from .registry import build

    config = dict(condition_config or {})
    if condition == "mlp":
        summary: nn.Module = MLPSummary(n_pix, **config)
    else:
        regressor = build(condition, n_labels=1, n_pix=n_pix, **config)
        if not isinstance(regressor, SpectrumRegressor):
            raise ValueError(f"'{condition}' has no encoder to condition on")
        regressor.head = nn.Identity()  # only the encoder conditions the flow
        summary = _EncoderSummary(regressor)
    return CINN(summary, n_labels, transforms, hidden, bins)
