"""The spectrograph: arms, line-spread function, rotation, pixel sampling and noise.

Convolution happens in Fourier space on a uniform ln λ model grid per arm
(:class:`ArmSampling`): a Gaussian LSF at the arm's resolving power, the classical rotation
kernel with linear limb darkening (analytic transform with Bessel J₁), the pixel boxcar and,
where asked, a Doppler shift (a phase ramp). The result is sampled at the pixel centres. The
built-in generator and the observation of external grids (:mod:`.observe`) share this path.
Noise: photon noise of object and sky, read noise, optional cosmic rays and bad pixels; S/N
is the median per pixel over 6180–6680 Å (4MOST Galactic pipeline), or over all pixels when
the grid does not reach that window.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy.fft import next_fast_len

from ..quantities import C_KMS, snr_window
from ..spectra.grid import WavelengthGrid
from ..spectra.presets import hrs_grid, lrs_grid
from ..spectra.schema import MaskBit

#: Sky emission lines (vacuum Å) and relative strengths: [O I], Na D, Hg street lamps.
SKY_LINES_A = ((5578.9, 30.0), (6302.0, 12.0), (6365.5, 4.0), (5891.6, 6.0), (5897.6, 4.0),
               (4359.6, 3.0), (5462.3, 3.0))


#: the largest relative change of R(λ) within one constant-R piece of an arm
R_PIECE_CHANGE = 0.02


class ArmConfig(BaseModel):
    """One spectrograph arm: the wavelength range it covers (Å) and its resolving power,
    constant or R(λ) as a table of (wavelength Å, R) points (linear between them, constant
    beyond)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    lo: float = Field(gt=0)
    hi: float = Field(gt=0)
    resolving_power: float | list[tuple[float, float]] = Field(
        description="R, or [[wavelength Å, R], ...] for R(λ)")

    @field_validator("resolving_power")
    @classmethod
    def _sensible_r(cls, value: float | list[tuple[float, float]]
                    ) -> float | list[tuple[float, float]]:
        table = [(0.0, value)] if isinstance(value, (int, float)) else value
        if not table:
            raise ValueError("an R(λ) table needs at least one (wavelength, R) point")
        if any(r <= 100 for _, r in table):
            raise ValueError("resolving powers must exceed 100")
        waves = [w for w, _ in table]
        if waves != sorted(waves) or len(set(waves)) != len(waves):
            raise ValueError("R(λ) wavelengths must increase")
        return value

    def resolving_power_at(self, wave_a: np.ndarray | float) -> np.ndarray:
        """R at ``wave_a`` (Å)."""
        if isinstance(self.resolving_power, (int, float)):
            return np.full(np.shape(wave_a), float(self.resolving_power))
        w, r = np.asarray(self.resolving_power, dtype=float).T
        return np.interp(wave_a, w, r)

    def pieces(self) -> list[ArmConfig]:
        """The arm as constant-R pieces: itself if R is constant, else equal pieces in
        ln λ across which R changes by at most ``R_PIECE_CHANGE``, each at the R of its
        centre (named ``<arm>.<k>``)."""
        if isinstance(self.resolving_power, (int, float)):
            return [self]
        r = self.resolving_power_at(np.geomspace(self.lo, self.hi, 1001))
        steps = np.abs(np.diff(np.log(r))).sum()
        n = int(min(64, max(1, math.ceil(steps / R_PIECE_CHANGE))))
        edges = np.geomspace(self.lo, self.hi, n + 1)
        return [ArmConfig(name=f"{self.name}.{k}", lo=float(a), hi=float(b),
                          resolving_power=float(self.resolving_power_at(math.sqrt(a * b))))
                for k, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]

    def covers(self, wave_a: np.ndarray) -> np.ndarray:
        """Which of ``wave_a`` (Å) fall in this arm (to within 1 ppm)."""
        return (wave_a >= self.lo * (1 - 1e-6)) & (wave_a <= self.hi * (1 + 1e-6))

    @model_validator(mode="after")
    def _order(self) -> ArmConfig:
        if self.hi <= self.lo:
            raise ValueError(f"arm '{self.name}': hi ({self.hi}) must exceed lo ({self.lo})")
        return self


class InstrumentConfig(BaseModel):
    """A spectrograph mode: its arms, the pixel grid, detector and sky (defaults: 4MOST,
    from shared/reference/4most.md; approximate values are settings, not constants)."""

    model_config = ConfigDict(extra="forbid")

    mode: str
    arms: list[ArmConfig] = Field(min_length=1)
    grid: Literal["lrs", "hrs"] | WavelengthGrid
    read_noise_e: float = Field(default=2.3, ge=0, description="e⁻ per pixel")
    sky_continuum_e: float = Field(default=20.0, ge=0, description="sky e⁻ per pixel")
    sky_lines: bool = True
    exposure_min: float = Field(default=20.0, gt=0)
    cosmic_rate_per_min: float = Field(default=1e-5, ge=0, description="per pixel")
    bad_pixel_fraction: float = Field(default=0.0, ge=0, lt=1)
    oversample: float = Field(default=6.0, ge=3, description="model samples per LSF FWHM")

    def pieces(self) -> list[ArmConfig]:
        """Every arm as constant-R pieces (:meth:`ArmConfig.pieces`), in arm order."""
        return [piece for arm in self.arms for piece in arm.pieces()]

    def pixel_grid(self) -> WavelengthGrid:
        if isinstance(self.grid, WavelengthGrid):
            return self.grid
        return lrs_grid() if self.grid == "lrs" else hrs_grid()

    @model_validator(mode="after")
    def _arms_cover_grid(self) -> InstrumentConfig:
        w = self.pixel_grid().wavelength()
        covered = np.zeros(w.size, bool)
        for arm in self.arms:
            covered |= arm.covers(w)
        if not covered.all():
            raise ValueError(f"instrument '{self.mode}': pixels at {w[~covered][0]:.2f} Å are "
                             "in no arm's range")
        return self


def lrs_instrument() -> InstrumentConfig:
    """4MOST LRS: three arms (R ≈ 4,000–7,800; approx. 5,000 / 6,500 / 7,500) stitched at
    5327.7 and 7031.7 Å onto the joined 0.25 Å grid."""
    return InstrumentConfig(mode="LRS", grid="lrs", arms=[
        ArmConfig(name="blue", lo=3700.0, hi=5327.7, resolving_power=5000.0),
        ArmConfig(name="green", lo=5327.7, hi=7031.7, resolving_power=6500.0),
        ArmConfig(name="red", lo=7031.7, hi=9500.0, resolving_power=7500.0),
    ])


def hrs_instrument() -> InstrumentConfig:
    """4MOST HRS: blue, green and red arms at R ≈ 20,000."""
    return InstrumentConfig(mode="HRS", grid="hrs", arms=[
        ArmConfig(name="blue", lo=3926.0, hi=4355.0, resolving_power=20_000.0),
        ArmConfig(name="green", lo=5160.0, hi=5730.0, resolving_power=20_000.0),
        ArmConfig(name="red", lo=6100.0, hi=6790.0, resolving_power=20_000.0),
    ])


INSTRUMENTS = {"LRS": lrs_instrument, "HRS": hrs_instrument}


def instrument_named(value: str | InstrumentConfig) -> InstrumentConfig:
    """A configuration's ``instrument``: a mode name (LRS, HRS) or a full definition."""
    if isinstance(value, InstrumentConfig):
        return value
    if value not in INSTRUMENTS:
        raise ValueError(f"instrument: unknown mode '{value}'; known: {sorted(INSTRUMENTS)} "
                         "or a full instrument definition")
    return INSTRUMENTS[value]()


class _BesselJ1(torch.autograd.Function):
    """J₁(x) with its derivative J₀(x) − J₁(x)/x in both autograd modes (torch's own
    ``bessel_j1`` has none)."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.special.bessel_j1(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        (x,) = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)

    @staticmethod
    def _derivative(x: torch.Tensor) -> torch.Tensor:
        safe = torch.where(x.abs() < 1e-6, torch.ones_like(x), x)
        d = torch.special.bessel_j0(safe) - torch.special.bessel_j1(safe) / safe
        return torch.where(x.abs() < 1e-6, torch.full_like(x, 0.5), d)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * _BesselJ1._derivative(x)

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return tangent * _BesselJ1._derivative(x)


def broadening_transfer(freq: torch.Tensor, vsini: torch.Tensor, resolving_power: float,
                        pixel_kms: float, limb_darkening: float = 0.6) -> torch.Tensor:
    """Fourier transform (B, F) of LSF ⊗ rotation ⊗ pixel boxcar at frequencies ``freq``
    (cycles per km/s, shape (F,)) for projected rotation ``vsini`` (B,) km/s."""
    sigma_v = C_KMS / (2.3548 * resolving_power)
    gauss = torch.exp(-2.0 * math.pi**2 * sigma_v**2 * freq**2)[None, :]
    q = 2.0 * math.pi * freq[None, :] * torch.clamp(vsini, min=1e-3)[:, None]
    eps = limb_darkening
    small = q < 1e-3
    qs = torch.where(small, torch.ones_like(q), q)
    semicircle = torch.where(small, 1.0 - q**2 / 8.0, 2.0 * _BesselJ1.apply(qs) / qs)
    parabola = torch.where(small, 1.0 - q**2 / 10.0,
                           3.0 * (torch.sin(qs) - qs * torch.cos(qs)) / qs**3)
    w_semi = (1.0 - eps) / (1.0 - eps / 3.0)
    rotation = w_semi * semicircle + (1.0 - w_semi) * parabola
    boxcar = torch.sinc(freq * pixel_kms)[None, :]
    return gauss * rotation * boxcar


@dataclass(frozen=True)
class ArmSampling:
    """How one arm's pixels are made from a uniform ln λ model grid: the pixel indices it
    owns, the model grid (first ln λ, step in ln λ, n samples), the resolving power of the
    LSF applied, the pixel width (km/s) and the pixel centres in model samples."""

    pixels: np.ndarray
    ln_lo: float
    step: float
    n: int
    resolving_power: float
    pixel_kms: float
    position: np.ndarray

    def model_wavelength(self) -> np.ndarray:
        """(n,) Å of the model samples."""
        return np.exp(self.ln_lo + self.step * np.arange(self.n))

    def observe(self, intrinsic: torch.Tensor, vsini: torch.Tensor,
                shift_kms: torch.Tensor | None = None) -> torch.Tensor:
        """Pixel flux (B, P) of the arm from model-grid flux ``intrinsic`` (B, n): LSF,
        rotation by ``vsini`` (B,) km/s, pixel boxcar and, if given, a Doppler shift of
        ``shift_kms`` (B,) km/s in c·ln λ (the model grid's margins must exceed it)."""
        # The transfer function in float64 whatever the working precision: the rotation
        # kernel's transform cancels catastrophically in float32 at small arguments.
        freq = torch.fft.rfftfreq(self.n, d=self.step * C_KMS, device=intrinsic.device,
                                  dtype=torch.float64)
        transfer = broadening_transfer(freq, vsini.to(torch.float64), self.resolving_power,
                                       self.pixel_kms).to(torch.complex128)
        if shift_kms is not None:
            transfer = transfer * torch.exp(-2j * math.pi * freq[None, :]
                                            * shift_kms.to(torch.float64)[:, None])
        spectrum = torch.fft.rfft(intrinsic, dim=1)
        smooth = torch.fft.irfft(spectrum * transfer.to(spectrum.dtype), n=self.n, dim=1)
        pos = torch.as_tensor(self.position, dtype=intrinsic.dtype, device=intrinsic.device)
        left = torch.floor(pos).long()
        frac = pos - left
        return smooth[:, left] * (1 - frac) + smooth[:, left + 1] * frac


def arm_samplings(instrument: InstrumentConfig, wave_a: np.ndarray,
                  step: Callable[[ArmConfig], float], margin_kms: float,
                  kernel_resolving_power: Callable[[ArmConfig], float] | None = None
                  ) -> list[ArmSampling]:
    """One :class:`ArmSampling` per constant-R piece of an arm that owns pixels of
    ``wave_a`` (a pixel in two ranges belongs to the first): model step ``step(piece)`` in
    ln λ, ``margin_kms`` beyond the piece's pixels on each side, the LSF at
    ``kernel_resolving_power(piece)`` (default: the piece's own resolving power)."""
    out: list[ArmSampling] = []
    claimed = np.zeros(wave_a.size, bool)
    for arm in instrument.pieces():
        sel = np.flatnonzero(arm.covers(wave_a) & ~claimed)
        if sel.size == 0:
            continue
        claimed[sel] = True
        w = wave_a[sel]
        d = step(arm)
        ln_lo = math.log(w[0]) - margin_kms / C_KMS
        ln_hi = math.log(w[-1]) + margin_kms / C_KMS
        n = next_fast_len(int(math.ceil((ln_hi - ln_lo) / d)) + 1, real=True)
        pixel_kms = float(np.median(np.diff(w) / w[:-1])) * C_KMS if w.size > 1 else 0.0
        r = kernel_resolving_power(arm) if kernel_resolving_power else arm.resolving_power
        out.append(ArmSampling(pixels=sel, ln_lo=ln_lo, step=d, n=n, resolving_power=r,
                               pixel_kms=pixel_kms, position=(np.log(w) - ln_lo) / d))
    return out


def assemble(pieces: list[tuple[ArmSampling, torch.Tensor]], npix: int) -> torch.Tensor:
    """The arms' pixel flux (B, P_arm) joined into (B, npix)."""
    first = pieces[0][1]
    if len(pieces) == 1 and pieces[0][0].pixels.size == npix:
        return first
    out = torch.empty(first.shape[0], npix, dtype=first.dtype, device=first.device)
    for arm, sampled in pieces:
        out = out.index_copy(1, torch.as_tensor(arm.pixels, device=first.device), sampled)
    return out


def sky_spectrum(wave_a: np.ndarray, arms: list[ArmConfig], continuum_e: float,
                 lines: bool) -> np.ndarray:
    """Sky e⁻ per pixel (L,): a flat continuum plus LSF-broadened emission lines."""
    sky = np.full(wave_a.size, continuum_e, dtype=np.float64)
    if not lines:
        return sky
    for arm in arms:
        sel = arm.covers(wave_a)
        for centre, strength in SKY_LINES_A:
            sigma = centre / arm.resolving_power / 2.3548
            sky[sel] += continuum_e * strength * np.exp(
                -0.5 * ((wave_a[sel] - centre) / sigma) ** 2)
    return sky


def counts_scale(flux_window: torch.Tensor, sky_window: torch.Tensor, read_noise: float,
                 snr: torch.Tensor) -> torch.Tensor:
    """e⁻ per unit relative flux, (B,), such that the median over the window of
    C f / sqrt(C f + sky + RN²) equals ``snr`` (bisection in log C)."""
    lo = torch.full_like(snr, -10.0)
    hi = torch.full_like(snr, 25.0)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        c = torch.exp(mid)[:, None]
        got = torch.median(c * flux_window / torch.sqrt(
            c * flux_window + sky_window[None, :] + read_noise**2), dim=1).values
        high = got > snr
        hi = torch.where(high, mid, hi)
        lo = torch.where(high, lo, mid)
    return torch.exp(0.5 * (lo + hi))


def add_noise(flux: torch.Tensor, snr: torch.Tensor, wave_a: np.ndarray,
              config: InstrumentConfig, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noisy flux, sigma and mask (B, L) for noiseless relative ``flux`` at the requested
    ``snr`` (B,). Sky is subtracted (it only adds noise); cosmic-ray hits and bad pixels are
    flagged and set to flux 0, sigma +inf."""
    dtype = flux.dtype
    sky = torch.as_tensor(sky_spectrum(wave_a, config.pieces(), config.sky_continuum_e,
                                       config.sky_lines), dtype=dtype)
    win = torch.as_tensor(snr_window(wave_a))
    scale = counts_scale(flux[:, win], sky[win], config.read_noise_e, snr)[:, None]
    variance = torch.clamp(scale * flux, min=0.0) + sky[None, :] + config.read_noise_e**2
    sigma_e = torch.sqrt(variance)
    noise = torch.randn(flux.shape, generator=generator, dtype=dtype)
    noisy = flux + noise * sigma_e / scale
    sigma = sigma_e / scale
    mask = torch.zeros(flux.shape, dtype=torch.uint8)
    sky_line = sky[None, :].expand_as(flux) > 5.0 * config.sky_continuum_e
    mask[sky_line] |= int(MaskBit.SKY_LINE)
    p_cr = config.cosmic_rate_per_min * config.exposure_min
    if p_cr > 0:
        hit = torch.rand(flux.shape, generator=generator, dtype=dtype) < p_cr
        mask[hit] |= int(MaskBit.COSMIC_RAY)
    if config.bad_pixel_fraction > 0:
        bad = torch.rand(flux.shape, generator=generator, dtype=dtype) < config.bad_pixel_fraction
        mask[bad] |= int(MaskBit.BAD_PIXEL)
    unusable = (mask & int(MaskBit.COSMIC_RAY | MaskBit.BAD_PIXEL)) > 0
    noisy = torch.where(unusable, torch.zeros_like(noisy), noisy)
    sigma = torch.where(unusable, torch.full_like(sigma, math.inf), sigma)
    return noisy, sigma, mask
