"""Posteriors, spectrum → p(labels | spectrum) (paper 004's cINN): trained by maximum
likelihood on the regressors' inputs; validated by NLL, point-estimate errors and the
coverage of the central 68 % and 95 % intervals; in inference, ``samples`` draws per
spectrum give the mean, standard deviation and quantiles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...spectra.schema import quantile_column
from ..metrics import coverage
from ..normalisation import Normalisation, labels_of
from .base import Inputs
from .regressor import RegressorTask

#: Posterior draws per validation spectrum.
VALIDATION_DRAWS = 64


@dataclass(frozen=True)
class PosteriorTask(RegressorTask):
    family = "posterior"
    head = ("flow",)  # the spectrum summary network is the encoder
    gives = "log p(labels_z | flux); sample() for posterior draws"

    def loss(self, model: torch.nn.Module, inputs: Inputs, target: torch.Tensor,
             kind: str) -> torch.Tensor:
        keep = torch.isfinite(target).all(dim=1)
        return -model(inputs[0][keep], target[keep]).mean()

    def outputs(self, model: torch.nn.Module, inputs: Inputs, target: torch.Tensor,
                batch: dict[str, np.ndarray], norm: Normalisation,
                generator: torch.Generator) -> dict[str, np.ndarray]:
        samples = norm.unz(model.sample(inputs[0], VALIDATION_DRAWS).cpu().numpy())
        out = {"samples": samples, "pred": samples.mean(axis=0),
               "true": labels_of(batch, norm.labels)}
        for key in ("logg", "snr"):
            if key in batch:
                out[key] = np.asarray(batch[key], dtype=float)
        return out

    def metrics(self, parts: dict[str, np.ndarray], norm: Normalisation) -> dict[str, float]:
        return {**super().metrics(parts, norm),
                **coverage(parts["samples"], parts["true"], names=norm.labels,
                           snr=parts.get("snr"))}

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        out = super().evaluate(*args, **kwargs)
        out["nll"] = out["val_loss"]
        return out

    def headline(self, metrics: dict[str, Any], labels: Sequence[str]) -> dict[str, float]:
        shown = {k: metrics[k] for k in ("nll", "coverage68") if k in metrics}
        return {**shown, **super().headline(metrics, labels)}

    def run_reference(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]
                      ) -> dict[str, torch.Tensor]:
        model.eval()
        with torch.no_grad():
            return {"summary": model.summary(inputs["flux"]),
                    "log_prob": model(inputs["flux"], inputs["labels_z"])}

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, norm: Normalisation, flux: torch.Tensor,
                sigma: torch.Tensor, *, samples: int, quantiles: Sequence[float],
                noise_redraws: int, generator: torch.Generator
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        post = model.posterior(flux, samples, quantiles)
        err = norm.unz_err(post["mean"].cpu(), post["std"].cpu())
        qs = norm.unz(post["quantiles"].cpu())  # (Q, B, K)
        extra: dict[str, np.ndarray] = {}
        for k, name in enumerate(norm.labels):
            extra[f"{name}_err"] = err[:, k]
            for j, q in enumerate(quantiles):
                extra[quantile_column(name, q)] = qs[j, :, k]
        return norm.unz(post["mean"].cpu()), extra
