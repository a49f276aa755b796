"""Cloning (paper 001 §2.2–2.3, as blase does it): a grid spectrum recast as a continuum
times exp(−Σ pseudo-Voigt lines).

Per spectrum: divide by the blackbody at its Teff, fit a polynomial per arm through the
upper envelope, find the lines as dips of at least ``prominence`` in the normalised flux,
then fit every line's centre, ln amplitude, σ and γ jointly by Adam (paper: learning rate
0.05, 100 epochs), spectra batched, lines padded to the batch's most. The continuum
polynomial is fitted with the lines: at every step its coefficients are the exact
weighted least-squares solution for the current lines (variable projection), so the
result is a plain polynomial per arm. Residuals are weighted by 1/(blackbody ×
envelope)², i.e. measured in normalised flux.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy.signal import find_peaks

from ..spectra.continuum import legendre_continuum_basis
from .continuum import envelope_continuum, relative_blackbody
from .voigt import optical_depth

#: Lines start with a Lorentzian half-width of this fraction of their Gaussian σ.
START_GAMMA_FRACTION = 0.1


class CloneConfig(BaseModel):
    """How grid spectra are cloned (YAML-loadable; the paper's values by default)."""

    model_config = ConfigDict(extra="forbid")

    prominence: float = Field(default=0.005, gt=0, description="shallowest line kept, in "
                              "normalised flux")
    continuum_degree: int = Field(default=5, ge=0, description="Legendre degree of the "
                                  "continuum polynomial per arm")
    epochs: int = Field(default=100, gt=0, description="Adam steps")
    lr: float = Field(default=0.05, gt=0, description="Adam step size: line centres move "
                      "in pixels, amplitudes and widths in their logarithms")
    wing_pixels: int = Field(default=48, gt=0, description="pixels evaluated on each side "
                             "of a line centre (the paper's wing cut)")
    blackbody: bool | None = Field(default=None, description="divide by the blackbody at "
                                   "the spectrum's Teff (default: when the flux has a "
                                   "physical unit, not for normalised grids)")
    batch_size: int = Field(default=16, gt=0, description="spectra fitted together")
    max_lines: int | None = Field(default=None, gt=0, description="keep only the most "
                                  "prominent lines of each spectrum")


@dataclass
class Clone:
    """One spectrum's clone. Lines (N,): ``pixel`` where each was found, ``mu0`` its
    wavelength there (Å), fitted ``mu`` (Å), ``ln_a`` (ln Å), ``sigma`` and ``gamma`` (Å),
    ``prominence`` at detection. ``continuum`` (M,): the polynomial per arm in units of the
    relative blackbody; ``rms``: the reconstruction's RMS residual in normalised flux."""

    pixel: np.ndarray
    mu0: np.ndarray
    mu: np.ndarray
    ln_a: np.ndarray
    sigma: np.ndarray
    gamma: np.ndarray
    prominence: np.ndarray
    continuum: np.ndarray
    rms: float


@dataclass
class Detection:
    """What a spectrum's fit starts from: its envelope continuum (L,) in flux units, its
    usable pixels (L,), and the lines found (pixel, prominence, width in pixels; (N,))."""

    envelope: np.ndarray
    usable: np.ndarray
    peaks: np.ndarray
    prominence: np.ndarray
    width: np.ndarray


def find_lines(normalised: np.ndarray, usable: np.ndarray, prominence: float,
               max_lines: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dips of ``normalised`` flux (L,) at least ``prominence`` deep relative to their
    surroundings: pixel indices, prominences and widths at half prominence (pixels),
    the most prominent ``max_lines`` if given, in wavelength order."""
    depth = np.where(usable, 1.0 - normalised, 0.0)
    peaks, props = find_peaks(depth, prominence=prominence, width=0)
    prom, width = props["prominences"], props["widths"]
    if max_lines is not None and peaks.size > max_lines:
        keep = np.sort(np.argsort(prom)[::-1][:max_lines])
        peaks, prom, width = peaks[keep], prom[keep], width[keep]
    return peaks, prom, width


class Cloner:
    """Clones spectra on one wavelength grid (``wave`` (L,) Å, arms of ``arm_npix``
    pixels) on ``device``."""

    def __init__(self, wave: np.ndarray, arm_npix: list[int], config: CloneConfig,
                 blackbody: bool, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.blackbody = blackbody
        self.device = torch.device(device)
        self.wave_np = np.asarray(wave, dtype=np.float64)
        self.wave = torch.tensor(self.wave_np, device=self.device)
        self.pixel_width = np.gradient(self.wave_np)
        self.basis_np = legendre_continuum_basis(arm_npix, config.continuum_degree)
        self.basis = torch.as_tensor(self.basis_np, device=self.device)
        m = self.basis_np.shape[1]
        outer = self.basis_np[:, :, None] * self.basis_np[:, None, :]
        self.outer = torch.as_tensor(outer.reshape(len(outer), m * m), device=self.device)

    def continuum_shape(self, teff: np.ndarray) -> np.ndarray:
        """(B, L) the relative blackbody at each Teff (ones without blackbody division)."""
        if not self.blackbody:
            return np.ones((len(teff), self.wave_np.size))
        return relative_blackbody(self.wave.cpu(), torch.as_tensor(teff, dtype=torch.float64)
                                  ).numpy()

    def clone(self, flux: np.ndarray, usable: np.ndarray, teff: np.ndarray) -> list[Clone]:
        """Clones of spectra ``flux`` (B, L) with ``usable`` pixels (B, L) and Teff (B,) K."""
        flux = np.asarray(flux, dtype=np.float64)
        usable = usable & np.isfinite(flux)
        shape = self.continuum_shape(teff)
        found = []
        for f, u, s in zip(flux, usable, shape):
            coeff = envelope_continuum(f / s, u, self.basis_np)
            envelope = s * (self.basis_np @ coeff)
            ok = u & (envelope > 0)
            lines = find_lines(np.where(ok, f / np.where(ok, envelope, 1), 1), ok,
                               self.config.prominence, self.config.max_lines)
            found.append(Detection(envelope, ok, *lines))
        return self._fit(flux, shape, found)

    def _fit(self, flux: np.ndarray, shape: np.ndarray, found: list[Detection]
             ) -> list[Clone]:
        """All lines of the batch by Adam, the continuum by variable projection."""
        cfg, dev = self.config, self.device
        b, n = len(flux), max(1, max(len(d.peaks) for d in found))
        pad = np.zeros((b, n), dtype=np.int64)
        present = np.zeros((b, n))
        start = np.zeros((4, b, n))  # ln a, ln σ, ln γ, pixel width (Å)
        for i, d in enumerate(found):
            k = len(d.peaks)
            pad[i, :k], present[i, :k] = d.peaks, 1.0
            dlam = self.pixel_width[d.peaks]
            sigma = np.clip(d.width / 2.355, 0.5, 8.0) * dlam
            tau0 = -np.log1p(-np.clip(d.prominence, 1e-4, 0.95))
            start[:, i, :k] = [np.log(tau0 * sigma * np.sqrt(2 * np.pi)), np.log(sigma),
                               np.log(START_GAMMA_FRACTION * sigma), dlam]
        start[3][present == 0] = 1.0
        start[1:3][:, present == 0] = 0.0
        mu0 = torch.as_tensor(self.wave_np[pad], device=dev)
        dlam = torch.as_tensor(start[3], device=dev)
        weight_line = torch.as_tensor(present, device=dev)
        shift = torch.zeros(b, n, dtype=torch.float64, device=dev, requires_grad=True)
        ln_a, ln_s, ln_g = (torch.as_tensor(start[j], device=dev).requires_grad_(True)
                            for j in range(3))
        target = torch.as_tensor(flux, device=dev).nan_to_num()
        shape_t = torch.as_tensor(shape, device=dev)
        envelope = np.stack([d.envelope for d in found])
        ok = np.stack([d.usable for d in found])
        weight = torch.as_tensor(np.where(ok, 1.0 / np.where(ok, envelope, 1.0) ** 2, 0.0),
                                 device=dev)
        n_used = weight.gt(0).sum(1).clamp_min(1)

        def model() -> tuple[torch.Tensor, torch.Tensor]:
            tau = optical_depth(self.wave, mu0 + shift * dlam, ln_a, ln_s.exp(), ln_g.exp(),
                                cfg.wing_pixels, weight_line)
            lines = shape_t * torch.exp(-tau)
            coeff = self._continuum(lines, target, weight)
            return lines * (coeff @ self.basis.T), coeff

        opt = torch.optim.Adam([shift, ln_a, ln_s, ln_g], lr=cfg.lr)
        for _ in range(cfg.epochs):
            fit, _ = model()
            loss = ((weight * (target - fit) ** 2).sum(1) / n_used).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            fit, coeff = model()
            rms = ((weight * (target - fit) ** 2).sum(1) / n_used).sqrt().cpu().numpy()
        mu = (mu0 + shift * dlam).detach().cpu().numpy()
        out = []
        for i, d in enumerate(found):
            k = len(d.peaks)
            out.append(Clone(
                pixel=d.peaks.astype(np.int32), mu0=self.wave_np[d.peaks], mu=mu[i, :k],
                ln_a=ln_a[i, :k].detach().cpu().numpy(),
                sigma=ln_s[i, :k].detach().exp().cpu().numpy(),
                gamma=ln_g[i, :k].detach().exp().cpu().numpy(), prominence=d.prominence,
                continuum=coeff[i].cpu().numpy(), rms=float(rms[i])))
        return out

    def _continuum(self, lines: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
                   ) -> torch.Tensor:
        """Per spectrum the coefficients (B, M) of the polynomial that, times ``lines``
        (B, L), best fits ``target`` with pixel weights ``weight``."""
        m = self.basis.shape[1]
        gram = ((weight * lines * lines) @ self.outer).reshape(-1, m, m)
        rhs = (weight * lines * target) @ self.basis
        ridge = 1e-10 * gram.diagonal(dim1=1, dim2=2).mean(1) + 1e-30
        eye = torch.eye(m, dtype=gram.dtype, device=gram.device)
        return torch.linalg.solve(gram + ridge[:, None, None] * eye, rhs)
