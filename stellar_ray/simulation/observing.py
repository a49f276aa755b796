"""What lies between a star and the detector besides the spectrograph: interstellar
reddening, the Earth's atmosphere, and an imperfect flux calibration.

:class:`ObservingConditions` (a survey's distributions) draws per spectrum an E(B−V), an
airmass and a precipitable water vapour; :class:`Observing` applies them to noiseless spectra
on an instrument's pixels, before noise:

* reddening: 10^(−0.4 A_λ) with A_λ from a standard extinction law (the ``extinction``
  package: Fitzpatrick 1999, Cardelli et al. 1989, O'Donnell 1994) at R_V, normalised over
  the S/N window so that the generator's flux unit stays the same;
* tellurics: exp(−X (PWV τ_H₂O + τ_O₂)) for airmass X, from the H₂O opacity per mm of water
  and the O₂ cross-sections of the ``pwv_kpno`` package's MODTRAN models (GPL-3, fetched at
  run time like the line list; 3000–12000 Å at 0.05 Å), with an O₂ column for 4MOST's site;
  the transmission is taken to each arm's resolution and pixels on its own and multiplies the
  observed spectrum (exact where the star is smooth across a telluric line);
* flux calibration: per arm, 1 + Σ_k c_k P_k(x), Legendre polynomials of degree 0..d over the
  arm, c_k ~ N(0, rms) — the low-order distortions a pipeline's calibration leaves.
"""

from __future__ import annotations

import io
import zipfile
from functools import lru_cache

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..quantities import C_KMS, snr_window
from .instrument import InstrumentConfig, arm_samplings
from .package_files import PackageArchive, cache_dir, cache_lock

PWV_KPNO = PackageArchive(
    package="pwv_kpno", version="1.3.0", filename="pwv_kpno-1.3.0-py2.py3-none-any.whl",
    sha256="1b98c395c568a9126a69a7a402fa4fd72661b0d9ceb7cdc7bc3b36c4459b4b23",
    env="STELLAR_RAY_TELLURIC_WHEEL", sdist=False)
#: O₂ molecules per cm² above Cerro Paranal (2,635 m, 4MOST's site): 0.2095 of an air column
#: of 1.6·10²⁵ cm⁻² (three quarters of the sea-level column).
O2_COLUMN_CM2 = 3.4e24
#: Sampling (km/s) of the transmission before it is taken to an arm's resolution.
TELLURIC_STEP_KMS = 2.0
#: Model-grid margin (km/s) beyond an arm's pixels: the convolution is periodic, and the
#: LSF's tails must not carry one end's bands to the other.
TELLURIC_MARGIN_KMS = 1000.0
#: Below this wavelength (Å) the atmosphere's molecular bands are left out (ozone's
#: Chappuis band is broad and shallow: a flux-calibration term absorbs it).
TELLURIC_MIN_A = 6800.0
EXTINCTION_LAWS = ("fitzpatrick99", "ccm89", "odonnell94")


@lru_cache(maxsize=1)
def telluric_opacity() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vacuum wavelength (Å), zenith optical depth of H₂O per mm of precipitable water, and
    zenith optical depth of O₂ (the cross-sections averaged over the model's levels)."""
    folder = cache_dir()
    parsed = folder / "pwv-kpno-telluric-v1.npz"
    with cache_lock(folder):
        if not parsed.exists():
            with zipfile.ZipFile(PWV_KPNO.fetch(folder)) as wheel:
                water = np.loadtxt(io.BytesIO(wheel.read(
                    "pwv_kpno/site_data/kitt_peak/atm_model.csv")), delimiter=",", skiprows=1)
                oxygen = np.loadtxt(io.BytesIO(wheel.read(
                    "pwv_kpno/default_atmosphere/o2cs.txt")))
            wave = water[:, 0]
            tau_o2 = O2_COLUMN_CM2 * np.interp(wave, oxygen[:, 0] * 1e4,
                                               oxygen[:, 1:].mean(axis=1))
            buffer = io.BytesIO()
            np.savez(buffer, wave=wave, tau_h2o=water[:, 1], tau_o2=tau_o2)
            tmp = parsed.with_suffix(".tmp")
            tmp.write_bytes(buffer.getvalue())
            tmp.replace(parsed)
    with np.load(parsed) as d:
        return d["wave"], d["tau_h2o"], d["tau_o2"]


class ObservingConditions(BaseModel):
    """Distributions of the observing conditions of a simulated survey (YAML-loadable); each
    range is (low, high), drawn uniformly. The defaults change nothing."""

    model_config = ConfigDict(extra="forbid")

    ebv: tuple[float, float] = (0.0, 0.0)
    r_v: float = Field(default=3.1, gt=1.0, lt=7.0)
    extinction_law: str = "fitzpatrick99"
    tellurics: bool = False
    airmass: tuple[float, float] = (1.0, 1.0)
    pwv_mm: tuple[float, float] = (0.0, 0.0)
    calibration_degree: int = Field(default=3, ge=0, le=10)
    calibration_rms: float = Field(default=0.0, ge=0.0, le=0.3,
                                   description="rms of each Legendre coefficient per arm")

    @model_validator(mode="after")
    def _check(self) -> ObservingConditions:
        for name, lowest in (("ebv", 0.0), ("airmass", 1.0), ("pwv_mm", 0.0)):
            lo, hi = getattr(self, name)
            if not lowest <= lo <= hi:
                raise ValueError(f"observing.{name}: need {lowest} <= low <= high, "
                                 f"got ({lo}, {hi})")
        if self.extinction_law not in EXTINCTION_LAWS:
            raise ValueError(f"observing.extinction_law: '{self.extinction_law}' is not one of "
                             f"{list(EXTINCTION_LAWS)}")
        return self

    def draw(self, n: int, rng: np.random.Generator, n_arms: int) -> dict[str, np.ndarray]:
        """Per spectrum: ebv (n,) mag, airmass (n,), pwv (n,) mm and the calibration
        coefficients (n, n_arms, degree + 1)."""
        return {
            "ebv": rng.uniform(*self.ebv, n),
            "airmass": rng.uniform(*self.airmass, n),
            "pwv": rng.uniform(*self.pwv_mm, n),
            "calibration": rng.normal(0.0, 1.0, (n, n_arms, self.calibration_degree + 1))
            * self.calibration_rms,
        }


class Observing:
    """The conditions of :class:`ObservingConditions` applied on one instrument's pixels."""

    def __init__(self, conditions: ObservingConditions, instrument: InstrumentConfig) -> None:
        import extinction

        self.conditions = conditions
        self.wave = instrument.pixel_grid().wavelength()
        law = getattr(extinction, conditions.extinction_law)
        # A_λ per unit E(B−V), relative to its mean over the S/N window (mag)
        k = law(self.wave.astype(np.float64), conditions.r_v, conditions.r_v)
        window = snr_window(self.wave)
        self.reddening = k - k[window].mean()
        self.arms = [arm.covers(self.wave) for arm in instrument.arms]
        self.n_arms = len(self.arms)
        self.legendre = []
        for sel in self.arms:
            w = self.wave[sel]
            x = 2.0 * (w - w[0]) / max(w[-1] - w[0], 1e-9) - 1.0
            self.legendre.append(np.polynomial.legendre.legvander(
                x, conditions.calibration_degree))  # (P_arm, d + 1)
        self.telluric = self._telluric_samplings(instrument) if conditions.tellurics else []

    def _telluric_samplings(self, instrument: InstrumentConfig):
        """Per arm piece reaching the telluric bands: its sampling and the H₂O and O₂ depths
        on its model grid."""
        wave, tau_h2o, tau_o2 = telluric_opacity()
        out = []
        for sampling in arm_samplings(instrument, self.wave, lambda _arm: TELLURIC_STEP_KMS
                                      / C_KMS, TELLURIC_MARGIN_KMS):
            grid = sampling.model_wavelength()
            if grid[-1] < TELLURIC_MIN_A:
                continue
            red = grid >= TELLURIC_MIN_A
            out.append((sampling, np.where(red, np.interp(grid, wave, tau_h2o), 0.0),
                        np.where(red, np.interp(grid, wave, tau_o2), 0.0)))
        return out

    def transmission(self, draws: dict[str, np.ndarray], dtype=torch.float64) -> torch.Tensor:
        """The factor (B, L) the conditions ``draws`` multiply noiseless spectra by."""
        n = len(draws["ebv"])
        factor = 10 ** (-0.4 * draws["ebv"][:, None] * self.reddening[None, :])
        for sel, basis, coeff in zip(self.arms, self.legendre,
                                     np.moveaxis(draws["calibration"], 1, 0)):
            factor[:, sel] *= np.clip(1.0 + coeff @ basis.T, 0.1, None)
        out = torch.as_tensor(factor, dtype=dtype)
        airmass = torch.as_tensor(draws["airmass"], dtype=torch.float64)[:, None]
        pwv = torch.as_tensor(draws["pwv"], dtype=torch.float64)[:, None]
        for sampling, tau_h2o, tau_o2 in self.telluric:
            tau = (pwv * torch.as_tensor(tau_h2o)[None, :]
                   + torch.as_tensor(tau_o2)[None, :]) * airmass
            observed = sampling.observe(torch.exp(-tau), torch.zeros(n, dtype=torch.float64))
            pixels = torch.as_tensor(sampling.pixels)
            out[:, pixels] = out[:, pixels] * observed.to(dtype)
        return out
