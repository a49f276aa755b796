"""Predict mode: estimates as the model's task makes them (cINN: posterior mean, standard
deviation and quantiles from ``samples`` draws; point regressors: the prediction with the
spread over ``noise_redraws`` noisy copies as its uncertainty, paper 003 §3.7), widened by
the artifact's post-hoc error model when training found them miscalibrated."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from ..calibration import recalibrated
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
        cal = self.artifact.metadata.calibration
        if not (cfg.recalibrate and cal is not None and cal.applied):
            return labels, extra
        table = pa.table({**{n: labels[:, k] for k, n in enumerate(self.norm.labels)},
                          **extra})
        for name, c in cal.labels.items():
            table = recalibrated(table, name, c.scale, c.floor)
        return labels, {k: table.column(k).to_numpy() for k in extra}
