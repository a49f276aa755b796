"""The normalisation: everything that maps a dataset's labels and flux into a model's space
and back. Fitted on the training set, stored in the artifact."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from .preprocess import LabelScaler


class Normalisation(BaseModel):
    """labels: names (K); mean, std: the z-scoring (K); low, high: the training domain (K),
    in the labels' units; flux_scale: emulator targets are flux / flux_scale (flux in the
    dataset's unit); log1p: SM-Net's (scale, maximum) of its log1p flux scaling."""

    model_config = ConfigDict(extra="forbid")

    labels: list[str]
    mean: list[float]
    std: list[float]
    low: list[float]
    high: list[float]
    flux_scale: float = 1.0
    log1p: tuple[float, float] | None = None

    @classmethod
    def of_labels(cls, labels: np.ndarray, names: list[str]) -> Normalisation:
        """Statistics of training labels (N, K), NaN (unknown) values ignored."""
        scaler = LabelScaler.fit(torch.as_tensor(labels))
        return cls(labels=list(names), mean=scaler.mean.tolist(), std=scaler.std.tolist(),
                   low=np.nanmin(labels, axis=0).tolist(),
                   high=np.nanmax(labels, axis=0).tolist())

    def scaler(self) -> LabelScaler:
        """The z-scoring as the zoo's module (float32 buffers: it can go into a model)."""
        return LabelScaler(torch.as_tensor(self.mean), torch.as_tensor(self.std))

    def z(self, labels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, K) labels -> z-scores, float32."""
        return self.scaler()(torch.as_tensor(np.asarray(labels, dtype=np.float64)).float())

    def unz(self, z: torch.Tensor | np.ndarray) -> np.ndarray:
        """z-scores (..., K) -> labels, float64."""
        z = torch.as_tensor(np.asarray(z, dtype=np.float32))
        return self.scaler().inverse(z).double().numpy()

    def z_domain(self) -> tuple[np.ndarray, np.ndarray]:
        """The training domain in z-scores: (low (K,), high (K,))."""
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        return (np.asarray(self.low) - mean) / std, (np.asarray(self.high) - mean) / std


def labels_of(batch: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """(B, K) float64 labels from a numpy batch of columns."""
    return np.stack([np.asarray(batch[n], dtype=np.float64) for n in names], axis=1)
