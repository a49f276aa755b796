"""Classical baselines on the same inputs (paper 003): ridge regression and gradient-boosted
trees (LightGBM), one model per label. Not trained by gradient descent: ``fit`` takes
arrays; ``forward`` predicts, so they drop into the same evaluation code."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .preprocess import median_normalise


class _Classical(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.models: list = []

    @staticmethod
    def _features(flux: torch.Tensor | np.ndarray) -> np.ndarray:
        x, _ = median_normalise(torch.as_tensor(np.asarray(flux), dtype=torch.float32))
        return x.numpy()

    def _make(self):
        raise NotImplementedError

    def fit(self, flux: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
            ) -> _Classical:
        """flux (N, L), z-scored labels (N, K)."""
        x, y = self._features(flux), np.asarray(labels, dtype=np.float64)
        self.models = [self._make().fit(x, y[:, k]) for k in range(y.shape[1])]
        return self

    def forward(self, flux: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        if not self.models:
            raise RuntimeError("fit the baseline before predicting")
        x = self._features(flux)
        return torch.as_tensor(np.stack([m.predict(x) for m in self.models], axis=1),
                               dtype=torch.float32)


class RidgeBaseline(_Classical):
    """Ridge regression (L2 strength ``alpha``) per label."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def _make(self):
        from sklearn.linear_model import Ridge

        return Ridge(alpha=self.alpha)


class GBDTBaseline(_Classical):
    """LightGBM gradient-boosted trees per label."""

    def __init__(self, n_estimators: int = 500, learning_rate: float = 0.05,
                 num_leaves: int = 31, n_jobs: int = 1) -> None:
        super().__init__()
        self.params = {"n_estimators": n_estimators, "learning_rate": learning_rate,
                       "num_leaves": num_leaves, "n_jobs": n_jobs, "verbose": -1}

    def _make(self):
        from lightgbm import LGBMRegressor

        return LGBMRegressor(**self.params)
