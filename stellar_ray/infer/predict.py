"""Estimates from regressors and the cINN.

cINN: posterior mean, standard deviation and quantiles from ``samples`` draws.
Point regressors: the prediction for the observed spectrum, with the standard deviation
of the predictions for ``noise_redraws`` copies of it with fresh noise ε σ added (paper 003
§3.7) as the uncertainty.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.preprocess import inject_noise
from .actor import CatalogActor


def quantile_column(label: str, q: float) -> str:
    """Catalog column of quantile ``q`` of ``label``, e.g. teff_q16 or teff_q2.5."""
    return f"{label}_q{q * 100:g}"


class Predictor(CatalogActor):
    """Regressors and the cINN in the actor pool."""

    def estimate(self, flux: torch.Tensor, sigma: torch.Tensor, usable: torch.Tensor
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        model, names, cfg = self.artifact.model, self.norm.labels, self.config
        extra: dict[str, np.ndarray] = {}
        if self.artifact.metadata["family"] == "posterior":
            post = model.posterior(flux, cfg.samples, cfg.quantiles)
            scale = np.asarray(self.norm.std)
            labels = self.norm.unz(post["mean"].cpu())
            err = post["std"].cpu().double().numpy() * scale
            quantiles = self.norm.unz(post["quantiles"].cpu())  # (Q, B, K)
            for k, name in enumerate(names):
                extra[f"{name}_err"] = err[:, k]
                for j, q in enumerate(cfg.quantiles):
                    extra[quantile_column(name, q)] = quantiles[j, :, k]
            return labels, extra
        labels = self.norm.unz(model(flux).cpu())
        if cfg.noise_redraws > 0:
            draws = torch.stack([model(inject_noise(flux, sigma, 1.0, self.generator))
                                 for _ in range(cfg.noise_redraws)])
            err = self.norm.unz(draws.cpu()).std(axis=0, ddof=1)
        else:
            err = np.full_like(labels, np.nan)
        for k, name in enumerate(names):
            extra[f"{name}_err"] = err[:, k]
        return labels, extra
