"""Gaussian-process minimisation (paper 001 §4): the labels whose reconstruction has the
least RMS residual against the spectrum, found by scikit-optimize's ``gp_minimize``.

Per spectrum ``n_random`` random label tuples inside the model's domain seed the surrogate
and ``n_guided`` more are chosen by it (paper: 100 and 20). The random tuples are one
seeded design shared by every spectrum of a batch, so their reconstructions are computed
once per batch; the guided ones are evaluated one by one as the optimiser asks. The
objective is ln RMS of the weighted residual (RMS itself where spectra carry no noise
figures), with the continuum per arm profiled out when ``fit.continuum_degree`` is set;
the logarithm has the same minimum and a surrogate that fits it better. The velocity is
not searched (measure it with ``rv.measure``). Errors come from the Jacobian at the
minimum, after ``gp.polish_steps`` Levenberg–Marquardt steps (default 5; 0: the paper's
estimate as the GP leaves it).
"""

from __future__ import annotations

import numpy as np
import torch
from skopt import gp_minimize
from skopt.space import Space
from skopt.utils import cook_estimator

from ..errors import ModelError
from .fit import EmulatorFitter

#: Design points reconstructed and profiled together (bounds memory).
DESIGN_CHUNK = 32


class GPMinimizer(EmulatorFitter):
    """HML generators (or any emulator) in the actor pool, minimised per spectrum by a
    Gaussian process."""

    mode = "gp"

    def __init__(self, config_json: str) -> None:
        super().__init__(config_json)
        if "gp" not in self.task.modes:
            raise ModelError(f"gp mode needs an HML generator; this artifact holds a "
                             f"{self.task.family}", where=self.config.model)
        low, high = self.norm.z_domain()
        self.space = Space([(float(lo), float(hi)) for lo, hi in zip(low, high)])
        cfg = self.config.gp
        design = np.random.default_rng(self.config.seed).uniform(
            low, high, size=(cfg.n_random, len(low)))
        self.design = torch.as_tensor(design, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            self.design_models = torch.cat([
                self.observe(self.with_defaults(self.design[i:i + DESIGN_CHUNK]))
                for i in range(0, len(self.design), DESIGN_CHUNK)])

    def with_defaults(self, z: torch.Tensor) -> torch.Tensor:
        """Full parameters (N, P) for z-scored labels (N, K): zero velocity, no extra
        broadening."""
        params = self.starts(len(z))[0]
        params[:, :z.shape[1]] = z
        return params

    def rms(self, models: torch.Tensor, flux: torch.Tensor, weight: torch.Tensor
            ) -> torch.Tensor:
        """Weighted RMS residual (N,) of reconstructions ``models`` (N, L) against one
        spectrum ``flux`` (L,) with weights (L,)."""
        f, w = flux.expand_as(models), weight.expand_as(models)
        resid = f - self.profiled(models, f, w)
        return ((w * resid**2).sum(1) / (w > 0).sum(1).clamp_min(1)).sqrt()

    def minimise(self, flux: torch.Tensor, weight: torch.Tensor, seed: int) -> np.ndarray:
        """z-scored labels (K,) of least RMS for one spectrum (L,)."""
        cfg = self.config.gp
        with torch.no_grad():
            y0 = torch.cat([self.rms(self.design_models[i:i + DESIGN_CHUNK], flux, weight)
                            for i in range(0, len(self.design_models), DESIGN_CHUNK)])
        y0 = torch.log(y0.clamp_min(1e-30)).cpu().double().numpy()

        def objective(x: list[float]) -> float:
            z = torch.as_tensor([x], dtype=torch.float32, device=self.device)
            with torch.no_grad():
                value = self.rms(self.observe(self.with_defaults(z)), flux, weight)
            return float(torch.log(value.clamp_min(1e-30)))

        estimator = cook_estimator("GP", space=self.space, random_state=seed,
                                   noise="gaussian", n_restarts_optimizer=cfg.gp_restarts)
        result = gp_minimize(objective, self.space.dimensions,
                             x0=self.design.cpu().double().numpy().tolist(),
                             y0=y0.tolist(), n_calls=cfg.n_guided, n_initial_points=0,
                             base_estimator=estimator, acq_func=cfg.acq_func,
                             acq_optimizer=cfg.acq_optimizer, n_points=cfg.n_points,
                             random_state=seed)
        return np.asarray(result.x, dtype=np.float64)

    def search(self, flux: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, int]:
        best = [self.minimise(f, w, self.config.seed + i)
                for i, (f, w) in enumerate(zip(flux, weight))]
        z = torch.as_tensor(np.stack(best), dtype=torch.float32, device=self.device)
        return self.with_defaults(z), self.config.gp.polish_steps
