"""Classical baselines on the regressors' inputs (paper 003 §4): ridge regression and
gradient-boosted trees (LightGBM), on median-normalised flux, z-scored labels out.

Both are ``nn.Module``s whose state is plain tensors, so the artifact stores them in
safetensors like any model (no pickle): ridge as its coefficients (K, L) and intercepts (K,);
LightGBM as each label's text model, its UTF-8 bytes in a uint8 buffer. They are fitted on
arrays (``fit``) or, for ridge, from normal equations accumulated batch by batch
(:class:`NormalEquations`), not by gradient descent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .preprocess import median_normalise


def features(flux: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(B, L) float32 model inputs: flux divided by its median, clipped at 0."""
    return median_normalise(torch.as_tensor(np.asarray(flux) if not torch.is_tensor(flux)
                                            else flux, dtype=torch.float32))[0]


class NormalEquations:
    """Sums for ridge regression with an intercept, accumulated over batches in float64:
    n, Σx (L,), Σy (K,), XᵀX (L, L), Xᵀy (L, K). Memory is 8 L² bytes (4.3 GB for the
    joined LRS grid of 23,201 pixels)."""

    def __init__(self, n_pix: int, n_labels: int) -> None:
        self.n = 0
        self.sx = np.zeros(n_pix)
        self.sy = np.zeros(n_labels)
        self.xtx = np.zeros((n_pix, n_pix))
        self.xty = np.zeros((n_pix, n_labels))

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Rows ``x`` (B, L) with targets ``y`` (B, K); rows with a non-finite target skip."""
        keep = np.isfinite(y).all(axis=1)
        x, y = np.asarray(x, np.float64)[keep], np.asarray(y, np.float64)[keep]
        self.n += len(x)
        self.sx += x.sum(axis=0)
        self.sy += y.sum(axis=0)
        self.xtx += x.T @ x
        self.xty += x.T @ y

    def solve(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """(coefficients (K, L), intercepts (K,)) minimising |y − b − Xw|² + α|w|² (the
        intercept is not penalised, as scikit-learn's Ridge)."""
        if self.n == 0:
            raise ValueError("ridge: no training rows with every label known")
        mx, my = self.sx / self.n, self.sy / self.n
        gram = self.xtx - self.n * np.outer(mx, mx)
        rhs = self.xty - self.n * np.outer(mx, my)
        gram[np.diag_indices_from(gram)] += alpha
        from scipy.linalg import solve

        w = solve(gram, rhs, assume_a="pos")
        return w.T, my - mx @ w


class RidgeBaseline(nn.Module):
    """Ridge regression of every label at once (paper 003: α = 10⁵)."""

    def __init__(self, n_labels: int = 1, n_pix: int = 1, alpha: float = 1e5) -> None:
        super().__init__()
        self.alpha = alpha
        self.register_buffer("coef", torch.zeros(n_labels, n_pix))
        self.register_buffer("intercept", torch.zeros(n_labels))

    def set_solution(self, coef: np.ndarray, intercept: np.ndarray) -> RidgeBaseline:
        self.coef = torch.as_tensor(coef, dtype=torch.float32).contiguous()
        self.intercept = torch.as_tensor(intercept, dtype=torch.float32)
        return self

    def fit(self, flux: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
            ) -> RidgeBaseline:
        """flux (N, L), z-scored labels (N, K)."""
        y = np.asarray(labels, dtype=np.float64)
        sums = NormalEquations(np.shape(flux)[1], y.shape[1])
        sums.add(features(flux).numpy(), y)
        return self.set_solution(*sums.solve(self.alpha))

    def forward(self, flux: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        return features(flux).to(self.coef.device) @ self.coef.T + self.intercept


class GBDTBaseline(nn.Module):
    """LightGBM gradient-boosted trees, one model per label (paper 003: 2,500 trees)."""

    def __init__(self, n_labels: int = 1, n_pix: int = 1, n_estimators: int = 2500,
                 learning_rate: float = 0.05, num_leaves: int = 31, n_jobs: int = 1) -> None:
        super().__init__()
        self.n_labels, self.n_pix = n_labels, n_pix
        self.rounds = n_estimators
        self.params = {"objective": "regression", "learning_rate": learning_rate,
                       "num_leaves": num_leaves, "num_threads": n_jobs, "verbose": -1}
        for k in range(n_labels):
            self.register_buffer(f"trees_{k}", torch.zeros(0, dtype=torch.uint8))
        self._boosters: list | None = None

    def fit(self, flux: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
            network: Mapping[str, Any] | None = None) -> GBDTBaseline:
        """flux (N, L), z-scored labels (N, K); ``network``: LightGBM's parameters for
        data-parallel training across workers (each passing its own rows)."""
        import lightgbm as lgb

        x = features(flux).numpy()
        y = np.asarray(labels, dtype=np.float64)
        self.n_labels, self.n_pix = y.shape[1], x.shape[1]
        params = {**self.params, **(network or {})}
        first = None
        for k in range(y.shape[1]):
            rows = np.isfinite(y[:, k])
            booster = lgb.train(params, lgb.Dataset(x[rows], y[rows, k]),
                                num_boost_round=self.rounds)
            self.register_buffer(f"trees_{k}", torch.frombuffer(
                bytearray(booster.model_to_string().encode()), dtype=torch.uint8))
            if network and first is None:
                # LightGBM's network is process-wide: the first label's booster opened it,
                # the others use it (binding the port again would race its release)
                first = booster
                params = {k: v for k, v in params.items()
                          if k not in ("machines", "local_listen_port")}
        if first is not None:
            first.free_network()
        self._boosters = None
        return self

    def boosters(self) -> list:
        """The label models, rebuilt from their text once."""
        if self._boosters is None:
            import lightgbm as lgb

            texts = [getattr(self, f"trees_{k}") for k in range(self.n_labels)]
            if any(t.numel() == 0 for t in texts):
                raise RuntimeError("fit the baseline before predicting")
            self._boosters = [lgb.Booster(model_str=bytes(t.cpu().numpy()).decode())
                              for t in texts]
        return self._boosters

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # a text model's length is known only from the stored state
        for k in range(self.n_labels):
            key = f"{prefix}trees_{k}"
            if key in state_dict:
                setattr(self, f"trees_{k}", torch.empty_like(state_dict[key]))
        self._boosters = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, flux: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        x = features(flux.cpu()).numpy()
        pred = np.stack([b.predict(x, num_threads=self.params["num_threads"])
                         for b in self.boosters()], axis=1)
        return torch.as_tensor(pred, dtype=torch.float32, device=flux.device)
