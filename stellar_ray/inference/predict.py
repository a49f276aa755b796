"""Predict mode: estimates as the model's task makes them (cINN: posterior mean, standard
deviation and quantiles from ``samples`` draws; point regressors: the prediction with the
spread over ``noise_redraws`` noisy copies as its uncertainty, paper 003 §3.7)."""

from __future__ import annotations

import numpy as np
import torch

from .actor import CatalogActor


class Predictor(CatalogActor):
    """Regressors, the cINN and the classical baselines in the actor pool: their task's
    ``predict``."""

    def estimate(self, flux: torch.Tensor, sigma: torch.Tensor, usable: torch.Tensor
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        cfg = self.config
        labels, extra = self.task.predict(self.artifact.model, self.norm, flux, sigma,
                                          samples=cfg.samples, quantiles=cfg.quantiles,
                                          noise_redraws=cfg.noise_redraws,
                                          generator=self.generator)
        return labels, extra
