"""Emulator fitting mode (paper 002 §3.5, as The Payne does it): the labels, the radial
velocity and an extra Gaussian broadening that best reproduce each spectrum through a
trained emulator.

Per batch: Adam on χ² from ``restarts`` starting points per spectrum (the first at the
training-set mean and zero velocity), the best start kept, then Levenberg–Marquardt steps
with a finite-difference Jacobian. The inverse of JᵀJ at the optimum gives the errors.
The velocity shift moves the model along the wavelength grid (linear interpolation); the
broadening is a Gaussian of σ km/s applied with the grid's median pixel width in km/s.
With ``fit.continuum_degree`` the model is multiplied by a Legendre polynomial per arm whose
coefficients enter linearly: for any labels they are solved for exactly (weighted linear
least squares), so χ² is profiled over them (variable projection) and the labels' errors
from the profiled Jacobian are marginalised over the continuum.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ModelError
from ..quantities import C_KMS
from ..spectra.continuum import legendre_continuum_basis
from .actor import CatalogActor
from .quality import CatalogFlag

#: Velocities are fitted in units of 100 km/s, so that their steps match the z-scores'.
RV_UNIT_KMS = 100.0
#: Finite-difference step for the Jacobian (z-score and 100 km/s units).
FD_STEP = 1e-3


class EmulatorFitter(CatalogActor):
    """Emulators in the actor pool: each spectrum fitted, not predicted."""

    mode = "fit"

    def __init__(self, config_json: str) -> None:
        super().__init__(config_json)
        if "fit" not in self.task.modes:
            raise ModelError(f"fit mode needs an emulator; this artifact holds a "
                             f"{self.task.family}", where=self.config.model)
        self.artifact.model.requires_grad_(False)  # gradients go to the fitted parameters
        wave = torch.as_tensor(self.wave, dtype=torch.float64)
        self.wave_t = wave.to(self.device)
        self.pixel_kms = float(np.median(np.diff(np.log(self.wave)))) * C_KMS
        low, high = self.norm.z_domain()
        self.z_low = torch.as_tensor(low, dtype=torch.float32, device=self.device)
        self.z_high = torch.as_tensor(high, dtype=torch.float32, device=self.device)
        self.n_params = len(self.norm.labels) + 1 + int(self.config.fit.fit_broadening)
        self.continuum_basis = None
        degree = self.config.fit.continuum_degree
        if degree is not None:
            basis = legendre_continuum_basis(self.artifact.grid.arm_npix(), degree)
            self.continuum_basis = torch.as_tensor(basis, dtype=torch.float32,
                                                   device=self.device)
            outer = basis[:, :, None] * basis[:, None, :]
            self.continuum_outer = torch.as_tensor(outer.reshape(len(basis), -1),
                                                   dtype=torch.float32, device=self.device)
        self.n_continuum = 0 if self.continuum_basis is None else basis.shape[1]

    def inside(self, z: torch.Tensor) -> torch.Tensor:
        """z-scored labels (N, K) clamped to where fits may go: the training domain, and
        for models that extrapolate a tenth of its width beyond (they do so badly)."""
        margin = 0.1 * (self.z_high - self.z_low) if self.task.extrapolates else 0.0
        return torch.clamp(z, self.z_low - margin, self.z_high + margin)

    def parameters(self, labels: np.ndarray, rv_kms: np.ndarray | None = None,
                   broadening_kms: np.ndarray | None = None) -> torch.Tensor:
        """The fit's parameters (N, P) for labels (N, K) in their units, velocities (N,)
        km/s (default 0) and extra broadening σ (N,) km/s (default: almost none): how a
        catalog row's estimates become the model that was fitted."""
        n, k = len(labels), len(self.norm.labels)
        params = torch.zeros(n, self.n_params, device=self.device)
        params[:, :k] = self.norm.z(labels).to(self.device)
        if rv_kms is not None:
            params[:, k] = torch.as_tensor(np.asarray(rv_kms) / RV_UNIT_KMS)
        if self.config.fit.fit_broadening:
            b = torch.full((n,), 0.13, dtype=torch.float64) if broadening_kms is None else \
                torch.as_tensor(np.asarray(broadening_kms, dtype=np.float64))
            params[:, k + 1] = torch.log(torch.expm1(b.clamp_min(1e-6))).float()  # softplus⁻¹
        return params

    # -- the forward model ------------------------------------------------------------
    def emulate(self, z: torch.Tensor) -> torch.Tensor:
        """Rest-frame model flux (N, L) for z-scored labels (N, K)."""
        return self.task.emulate(self.artifact.model, self.norm, z, self.wave_t)

    def observe(self, params: torch.Tensor) -> torch.Tensor:
        """Model flux (N, L) for parameters (N, P) = [z (K), rv / 100 km/s, broadening]."""
        k = len(self.norm.labels)
        flux = self.emulate(params[:, :k])
        if self.config.fit.fit_broadening:
            sigma_pix = torch.nn.functional.softplus(params[:, k + 1]) / self.pixel_kms
            flux = _gaussian_blur(flux, sigma_pix)
        return _doppler_shift(flux, self.wave_t, params[:, k] * RV_UNIT_KMS)

    def fitted(self, params: torch.Tensor, flux: torch.Tensor, weight: torch.Tensor
               ) -> torch.Tensor:
        """The model (N, L) for ``params``, times the continuum per arm that best fits
        ``flux`` with weights ``weight`` (N, L) when the fit has one."""
        return self.profiled(self.observe(params), flux, weight)

    def profiled(self, model: torch.Tensor, flux: torch.Tensor, weight: torch.Tensor
                 ) -> torch.Tensor:
        """``model`` (N, L) times the continuum per arm that best fits ``flux`` with
        weights ``weight`` (N, L), when the fit has one."""
        if self.continuum_basis is None:
            return model
        m = self.n_continuum
        gram = ((weight * model * model) @ self.continuum_outer).reshape(-1, m, m)
        rhs = (weight * model * flux) @ self.continuum_basis
        ridge = 1e-6 * gram.diagonal(dim1=1, dim2=2).mean(1) + 1e-12
        eye = torch.eye(m, device=flux.device, dtype=flux.dtype)
        coeff = torch.linalg.solve(gram + ridge[:, None, None] * eye, rhs)
        return model * (coeff @ self.continuum_basis.T)

    def residuals(self, params: torch.Tensor, flux: torch.Tensor, weight: torch.Tensor
                  ) -> torch.Tensor:
        """√w (f − model): (N, L)."""
        return weight.sqrt() * (flux - self.fitted(params, flux, weight))

    # -- the fit ----------------------------------------------------------------------
    def starts(self, n: int) -> torch.Tensor:
        """Starting parameters (R, n, P): the mean and zero velocity first, then random."""
        cfg, k = self.config.fit, len(self.norm.labels)
        p = torch.zeros(cfg.restarts, n, self.n_params, device=self.device)
        shape = (cfg.restarts - 1, n)
        span = self.z_high - self.z_low
        p[1:, :, :k] = self.z_low + span * torch.rand(*shape, k, generator=self.generator,
                                                      device=self.device)
        rv = (2 * torch.rand(*shape, generator=self.generator, device=self.device) - 1)
        p[1:, :, k] = rv * cfg.rv_range_kms / RV_UNIT_KMS
        if cfg.fit_broadening:
            p[:, :, k + 1] = -2.0  # softplus(-2) ≈ 0.13 km/s: almost none to start with
        return p

    def adam(self, flux: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Best of the restarts after Adam: (B, P)."""
        cfg, k = self.config.fit, len(self.norm.labels)
        n = len(flux)
        params = self.starts(n).reshape(cfg.restarts * n, -1).requires_grad_(True)
        f, w = flux.repeat(cfg.restarts, 1), weight.repeat(cfg.restarts, 1)
        opt = torch.optim.Adam([params], lr=cfg.lr)
        with torch.enable_grad():
            for _ in range(cfg.steps):
                chi2 = self.residuals(params, f, w).pow(2).sum(dim=1)
                opt.zero_grad()
                chi2.sum().backward()
                opt.step()
                with torch.no_grad():
                    params[:, :k] = self.inside(params[:, :k])
        with torch.no_grad():
            chi2 = self.residuals(params, f, w).pow(2).sum(dim=1).reshape(cfg.restarts, n)
            best = chi2.argmin(dim=0)
            return params.detach().reshape(cfg.restarts, n, -1)[best, torch.arange(n)]

    def jacobian(self, params: torch.Tensor, flux: torch.Tensor, weight: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Residuals (B, L) and their finite-difference Jacobian (B, L, P)."""
        r0 = self.residuals(params, flux, weight)
        k = len(self.norm.labels)
        cols = []
        for j in range(params.shape[1]):
            step = torch.zeros_like(params)
            step[:, j] = FD_STEP
            if j < k:  # a backward difference where a forward step would leave the domain
                outside = self.inside(params[:, :k] + step[:, :k])[:, j] != \
                    params[:, j] + FD_STEP
                step[:, j] = torch.where(outside, -FD_STEP, FD_STEP)
            cols.append((self.residuals(params + step, flux, weight) - r0) / step[:, j:j + 1])
        return r0, torch.stack(cols, dim=-1)

    def polish(self, params: torch.Tensor, flux: torch.Tensor, weight: torch.Tensor,
               steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``steps`` Levenberg–Marquardt steps from ``params``; returns (params, covariance
        (B, P, P) from the Jacobian at the end)."""
        damping = torch.full((len(params),), 1e-2, device=self.device)
        eye = torch.eye(params.shape[1], device=self.device)
        for _ in range(steps):
            r0, jac = self.jacobian(params, flux, weight)
            jtj = jac.transpose(1, 2) @ jac
            grad = (jac.transpose(1, 2) @ r0.unsqueeze(-1)).squeeze(-1)
            lhs = jtj + damping[:, None, None] * (jtj * eye + 1e-6 * eye)
            trial = params + torch.linalg.solve(lhs, -grad)
            trial[:, :len(self.norm.labels)] = self.inside(trial[:, :len(self.norm.labels)])
            better = self.residuals(trial, flux, weight).pow(2).sum(1) < r0.pow(2).sum(1)
            params = torch.where(better[:, None], trial, params)
            damping = torch.where(better, damping / 3, damping * 5)
        _, jac = self.jacobian(params, flux, weight)
        jtj = jac.transpose(1, 2) @ jac
        return params, torch.linalg.pinv(jtj)

    def search(self, flux: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The best parameters (B, P) found for spectra ``flux`` with pixel weights
        ``weight`` (B, L), and the Levenberg–Marquardt steps to take from them."""
        return self.adam(flux, weight), self.config.fit.polish_steps

    def estimate(self, flux: torch.Tensor, sigma: torch.Tensor, usable: torch.Tensor
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        k = len(self.norm.labels)
        weight, noiseless = pixel_weights(sigma, usable)
        params, steps = self.search(flux, weight)
        params, cov = self.polish(params, flux, weight, steps)
        model = self.fitted(params, flux, weight)
        resid = torch.where(usable, flux - model, torch.zeros_like(flux))
        chi2 = (weight * resid**2).sum(1)
        n_used = usable.sum(1)
        dof = (n_used - self.n_params - self.n_continuum).clamp_min(1)
        # without noise figures the weights are 1: the scatter about the fit sets the errors
        cov = torch.where(noiseless[:, None, None], cov * (chi2 / dof)[:, None, None], cov)
        err = cov.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt().cpu().double().numpy()
        labels = self.norm.unz(params[:, :k].cpu())
        label_err = self.norm.unz_err(params[:, :k].cpu(), err[:, :k])
        extra = {f"{name}_err": label_err[:, i] for i, name in enumerate(self.norm.labels)}
        extra["rv"] = (params[:, k] * RV_UNIT_KMS).cpu().double().numpy()
        extra["rv_err"] = err[:, k] * RV_UNIT_KMS
        if self.config.fit.fit_broadening:
            extra["broadening"] = torch.nn.functional.softplus(params[:, k + 1]).cpu().numpy()
        abs_resid = torch.where(usable, resid.abs(), torch.full_like(resid, float("nan")))
        extra.update({
            "chi2": chi2.cpu().numpy(),
            "chi2_reduced": (chi2 / dof).cpu().numpy(),
            "residual_rms": (resid.pow(2).sum(1) / n_used.clamp_min(1)).sqrt().cpu().numpy(),
            "residual_median_abs": torch.nanmedian(abs_resid, dim=1).values.cpu().numpy(),
            "pixels_used": n_used.cpu().numpy().astype(np.int32),
        })
        flags = np.zeros(len(flux), dtype=np.int32)
        flags[~np.isfinite(extra["chi2"]) | (n_used.cpu().numpy() == 0)] |= CatalogFlag.FAILED
        flags[extra["chi2_reduced"] > self.config.quality.max_chi2_reduced] |= \
            CatalogFlag.POOR_FIT
        extra["_flags"] = flags
        return labels, extra


def pixel_weights(sigma: torch.Tensor, usable: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights 1/σ² (B, L) of the usable pixels, and which spectra (B,) come without noise
    figures (σ = 0 everywhere, noiseless grids): their usable pixels weigh 1."""
    noiseless = ~((sigma > 0) & usable).any(1)
    weight = torch.where(usable, 1.0 / sigma.clamp_min(1e-18) ** 2, torch.zeros_like(sigma))
    weight = torch.where(noiseless[:, None], usable.to(sigma.dtype), weight)
    return weight, noiseless


def _gaussian_blur(flux: torch.Tensor, sigma_pix: torch.Tensor) -> torch.Tensor:
    """Each row of ``flux`` (N, L) convolved with a Gaussian of σ = sigma_pix (N,) pixels
    (edges padded with their end values, so nothing wraps around)."""
    pad = min(flux.shape[1], 64)
    padded = torch.cat([flux[:, :1].expand(-1, pad), flux, flux[:, -1:].expand(-1, pad)], 1)
    n = padded.shape[1]
    freq = torch.fft.rfftfreq(n, device=flux.device)
    transfer = torch.exp(-2 * (torch.pi * freq[None, :] * sigma_pix[:, None]) ** 2)
    return torch.fft.irfft(torch.fft.rfft(padded, dim=1) * transfer, n=n, dim=1)[:, pad:-pad]


def _doppler_shift(flux: torch.Tensor, wave: torch.Tensor, rv_kms: torch.Tensor
                   ) -> torch.Tensor:
    """Rest-frame flux (N, L) on ``wave`` (L,) seen at velocity rv (N,): f(λ / (1 + v/c)),
    linear interpolation, constant beyond the ends."""
    src = wave[None, :] / (1 + rv_kms.double()[:, None] / C_KMS)  # (N, L) float64
    right = torch.searchsorted(wave, src.detach()).clamp(1, len(wave) - 1)
    left = right - 1
    frac = ((src - wave[left]) / (wave[right] - wave[left])).clamp(0, 1).to(flux.dtype)
    return torch.gather(flux, 1, left) * (1 - frac) + torch.gather(flux, 1, right) * frac
