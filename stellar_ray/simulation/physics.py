"""Semi-analytic LTE line formation in one representative layer (torch, differentiable).

For labels (B, K) and rest-frame wavelengths (B, N) in Å this returns the emergent flux
relative to the continuum mean over 6180–6680 Å:

* continuum: Planck function at Teff;
* continuous opacity per hydrogen atom: H⁻ bound–free (Gray's fit), hydrogen bound–free
  from the levels above the local edge, electron scattering;
* electron pressure from hydrogen and metal ionisation (Saha), at a gas pressure that
  scales with g^0.64 as in grey atmospheres;
* line opacity at line centre from Saha–Boltzmann populations (Irwin's temperature-dependent
  partition functions) and gf, relative to the continuum (η₀), with a pseudo-Voigt profile:
  thermal + microturbulent Doppler width; radiative damping and van der Waals damping by
  neutral hydrogen from the line list (Anstee–Barklem–O'Mara cross-sections, tabulated γ₆,
  or Unsöld's approximation), Stark damping of hydrogen growing with electron pressure;
* Milne–Eddington saturation: r = (1 + β / (1 + Σ η)) / (1 + β), so strong lines
  saturate and grow through their damping wings (the curve of growth);
* molecular bands of TiO (M stars) and the CH G band (cool stars), as absorption edges.

The few constants of the single-layer approximation (:class:`FormationConstants`) are fitted
to solar equivalent widths (:mod:`.solar_calibration`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import gammaln

from ..quantities import C_KMS, SNR_WINDOW_A
from .atomic_data import SOLAR_A, SYMBOLS, load_atomic_data
from .labels import INDEX, typical
from .linelist import ABUNDANCE_LABEL, LineList

C_CGS = 2.99792458e10
K_CGS = 1.380649e-16
AMU_G = 1.66053907e-24
BOHR_CM = 5.29177e-9
HC_OVER_K = 1.438777e8  # Å K
K_EV = 8.617333e-5  # eV / K
AMU_KMS2 = 2 * 1.380649e-16 / 1.66053907e-24 / 1e10  # 2k/m_u in (km/s)^2 per K
LOG_SAHA_CONST = -0.4768  # log10[(2π m_e)^1.5 k^2.5 / h^3], cgs
#: Stark damping of hydrogen lines: γ = stark_scale (n_u² − n_l²)^STARK_N_EXP
#: (P_e / 30 dyn cm⁻²) s⁻¹. The linear Stark profile's wings grow as
#: (n_u² − n_l²)^1.5 and its core as (n_u² − n_l²); a Lorentzian standing in for it at the
#: distances that set equivalent widths needs about the square (it gives the solar
#: Hα / Hβ ratio).
STARK_N_EXP = 2.0

#: Half-widths, in ln λ, of the windows profiles are evaluated over: each line gets the
#: narrowest that holds its profile down to WING_ETA at its strongest; hydrogen the last.
WINDOW_LN = (3.0e-5, 6.0e-5, 1.2e-4, 2.5e-4, 5.0e-4, 1.0e-3, 2.0e-3, 4.0e-3, 0.02)
#: Opacity ratio at which a profile's window ends (a depth of about 10⁻³).
WING_ETA = 2e-3
#: Lines fade out of a star's spectrum as their η₀ falls from this to half of it (a central
#: depth of about 1 %, an equivalent width of about 1 mÅ); lines below half of it in every
#: reference atmosphere are left out of the list.
MIN_ETA = 0.02
#: Elements whose abundance does not follow [Fe/H].
PRIMORDIAL = ("H", "He")
#: Reference atmospheres the strength of each line is judged in: (Teff, log g, [Fe/H]).
REFERENCE_ATMOSPHERES = [(t, g, 0.5) for t in (3000.0, 3500.0, 4000.0, 4750.0, 5750.0, 7000.0,
                                              9000.0, 12000.0, 16000.0, 20000.0)
                         for g in (0.5, 5.0)]

#: TiO band heads (Å, vacuum) and CH G band centre.
TIO_HEADS_A = (4956.0, 5168.0, 5449.0, 5848.0, 6160.0, 6653.0, 7056.0, 7591.0, 8434.0,
               8861.0)
CH_BAND_A = (4300.0, 4322.0)


def log10_planck(wave_a: torch.Tensor, temp: torch.Tensor) -> torch.Tensor:
    """log10 of B_λ (erg s⁻¹ cm⁻² Å⁻¹ sr⁻¹) at wavelengths (Å) and temperatures (K),
    broadcasting."""
    lam_cm = wave_a * 1e-8
    x = HC_OVER_K / (wave_a * temp)
    return (math.log10(2 * 6.62607015e-27 * C_CGS**2 * 1e-8) - 5 * torch.log10(lam_cm)
            - torch.log10(torch.expm1(x)))


def log10_saha(temp: torch.Tensor, chi_ev: float | torch.Tensor, u_lower: float | torch.Tensor,
               u_upper: float | torch.Tensor) -> torch.Tensor:
    """log10 Φ(T) = log10(N_upper P_e / N_lower) (P_e in dyn cm⁻²)."""
    return (torch.log10(2.0 * torch.as_tensor(u_upper, dtype=temp.dtype)
                        / torch.as_tensor(u_lower, dtype=temp.dtype))
            + 2.5 * torch.log10(temp) - 5039.77 * torch.as_tensor(chi_ev, dtype=temp.dtype)
            / temp + LOG_SAHA_CONST)


def gas_pressure(teff: torch.Tensor, logg: torch.Tensor, feh: torch.Tensor,
                 solar: float = 1.2e5) -> torch.Tensor:
    """Gas pressure (dyn cm⁻²) of the line-forming layer: ``solar`` at solar labels, ∝ g^0.64,
    lower in hotter stars (more opacity), higher in metal-poor stars (less opacity)."""
    return (solar * 10 ** (0.64 * (logg - 4.44)) * (teff / 5777.0) ** -5.0
            * 10 ** (-0.2 * feh))


def electron_pressure(temp: torch.Tensor, p_gas: torch.Tensor, feh: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(P_e, ionised fraction of hydrogen) from hydrogen and metal (χ = 7.9 eV, 10⁻⁴ of H
    by number at solar [Fe/H]) ionisation balance, by damped fixed-point iteration."""
    phi_h = 10 ** log10_saha(temp, 13.598, 2.0, 1.0)
    phi_m = 10 ** log10_saha(temp, 7.9, 1.0, 1.0)
    eps_m = 1e-4 * 10**feh
    log_pe = torch.log(p_gas * 1e-4)
    for _ in range(40):
        pe = torch.exp(log_pe)
        x_h = phi_h / (phi_h + pe)
        x_m = phi_m / (phi_m + pe)
        target = p_gas * (x_h + eps_m * x_m) / (1.0 + x_h + eps_m * x_m)
        log_pe = 0.5 * log_pe + 0.5 * torch.log(target)
    pe = torch.exp(log_pe)
    return pe, phi_h / (phi_h + pe)


def continuous_opacity(wave_a: torch.Tensor, temp: torch.Tensor, pe: torch.Tensor,
                       p_gas: torch.Tensor, x_h: torch.Tensor) -> torch.Tensor:
    """Continuous opacity per hydrogen nucleus (cm²): H⁻ bound–free, H bound–free from
    levels n0..n0+2 above the local edge, and electron scattering. Shapes broadcast; wave
    (…, N) with per-star quantities (…, 1)."""
    theta = 5040.0 / temp
    lam = wave_a
    alpha = (1.99654 - 1.18267e-5 * lam + 2.64243e-6 * lam**2 - 4.40524e-10 * lam**3
             + 3.23992e-14 * lam**4 - 1.39568e-18 * lam**5 + 2.78701e-23 * lam**6) * 1e-18
    alpha = torch.where(lam < 16000.0, torch.clamp(alpha, min=0.0), torch.zeros_like(alpha))
    neutral = 1.0 - x_h
    k_hminus = 4.158e-10 * alpha * pe * theta**2.5 * 10 ** (0.754 * theta) * neutral
    n0 = torch.floor(torch.sqrt(lam / 911.267)) + 1.0  # lowest level whose edge is redder
    k_h = torch.zeros_like(k_hminus)
    for dn in range(3):
        n = n0 + dn
        chi_n = 13.598 * (1.0 - 1.0 / n**2)
        k_h = k_h + 1.0449e-26 * lam**3 / n**3 * 10 ** (-theta * chi_n)
    k_h = k_h * neutral
    k_e = 0.6648e-24 * pe / torch.clamp(p_gas - pe, min=1e-30)
    return k_hminus + k_h + k_e


def pseudo_voigt(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """H(a, v) ≈ √π × pseudo-Voigt (Thompson et al. 1987): peak ≈ 1 for a → 0, area √π.
    v: offset in Doppler widths; a: damping parameter."""
    f_g = 2.0 * math.sqrt(math.log(2.0))
    f_l = 2.0 * a
    f = (f_g**5 + 2.69269 * f_g**4 * f_l + 2.42843 * f_g**3 * f_l**2
         + 4.47163 * f_g**2 * f_l**3 + 0.07842 * f_g * f_l**4 + f_l**5) ** 0.2
    ratio = f_l / f
    eta = 1.36603 * ratio - 0.47719 * ratio**2 + 0.11116 * ratio**3
    hw = f / 2.0
    lorentz = hw / (math.pi * (v**2 + hw**2))
    gauss = math.sqrt(math.log(2.0) / math.pi) / hw * torch.exp(-math.log(2.0) * (v / hw) ** 2)
    return math.sqrt(math.pi) * (eta * lorentz + (1.0 - eta) * gauss)


@dataclass(frozen=True)
class FormationConstants:
    """The free constants of the single-layer approximation.

    ``line_strength`` multiplies every line's η₀ (the column of absorbers per unit of
    continuous opacity above the layer); ``layer_temperature`` is the metal-line layer's
    temperature over Teff; ``solar_pressure`` its gas pressure at solar labels (dyn cm⁻²);
    ``beta_scale`` the source-function gradient (the depth of saturated cores);
    ``damping_scale`` multiplies van der Waals damping; ``hydrogen_strength`` multiplies
    hydrogen's η₀ once more (hydrogen lines form over a much deeper range of layers);
    ``stark_scale`` (s⁻¹) sets hydrogen's Stark damping (see :data:`STARK_N_EXP`);
    ``hydrogen_exponent`` compresses hydrogen's opacity ratio, η₀ → η₀^q: Balmer wings form
    over a deep range of layers, and one layer's ratio, which grows ten-thousandfold from the
    Sun to A stars with the population of n = 2, would make them far too strong there.
    """

    line_strength: float = 3.0e-3
    layer_temperature: float = 0.9
    solar_pressure: float = 1.2e5
    beta_scale: float = 0.6
    damping_scale: float = 1.0
    hydrogen_strength: float = 10.0
    stark_scale: float = 7.5e9
    hydrogen_exponent: float = 1.0


#: Fitted to the solar equivalent widths of :data:`~.solar_calibration.SOLAR_LINES` by
#: ``python -m stellar_ray.simulation.solar_calibration``.
CALIBRATED = FormationConstants(line_strength=0.4452, layer_temperature=0.8866,
                                solar_pressure=3.547e4, beta_scale=0.7851, damping_scale=0.5377,
                                hydrogen_strength=11.50, stark_scale=2.200e11,
                                hydrogen_exponent=0.3082)


def _vdw_terms(lines: LineList, chi_ion: np.ndarray, mass: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per line (log10 A, e) of van der Waals damping γ₆ = A v̄^e N_H (s⁻¹, FWHM), v̄ the
    mean relative speed of the atom and a hydrogen atom (cm/s), N_H the density of neutral
    hydrogen (cm⁻³):

    * ABO cross-section σ (a₀²) at 10 km/s with velocity exponent α (``fdamp`` = σ + α):
      A = 2 (4/π)^(α/2) Γ((4 − α)/2) σ a₀² v₀^α, e = 1 − α (Anstee & O'Mara 1995);
    * tabulated log10 γ₆/N_H at 10⁴ K (``fdamp`` < 0): γ₆ ∝ T^0.3, e = 0.6;
    * otherwise Unsöld's approximation times ``fdamp`` (1 when 0): A = 17 C₆^0.4, e = 0.6,
      C₆ = 0.3·10⁻³⁰ Z² [1/(I − χ − χ_λ)² − 1/(I − χ)²] (Gray, *The Observation and
      Analysis of Stellar Photospheres*, ch. 11; energies in eV, Z the ion charge + 1).
    """
    fdamp = lines.fdamp
    abo = fdamp > 20.0
    tabulated = fdamp < 0.0
    sigma = np.floor(fdamp)
    alpha = fdamp - sigma
    log_abo = (math.log10(2.0) + alpha / 2 * math.log10(4 / math.pi)
               + gammaln((4.0 - alpha) / 2.0) / math.log(10.0)
               + np.log10(np.where(abo, sigma, 1.0) * BOHR_CM**2) + alpha * 6.0)
    mu = 1.0 / (1.0 / 1.008 + 1.0 / mass) * AMU_G
    v_1e4 = np.sqrt(8 * K_CGS * 1e4 / (math.pi * mu))
    log_tab = fdamp - 0.6 * np.log10(v_1e4)
    e_low = lines.chi
    e_up = lines.chi + 12398.42 / lines.wave
    limit = chi_ion
    z2 = lines.ion.astype(np.float64) ** 2
    c6 = 0.3e-30 * z2 * np.abs(1.0 / np.maximum(limit - e_up, 0.5) ** 2
                               - 1.0 / np.maximum(limit - e_low, 0.5) ** 2)
    fudge = np.where(fdamp > 0.0, fdamp, 1.0)
    log_unsold = np.log10(17.0 * fudge) + 0.4 * np.log10(np.maximum(c6, 1e-40))
    log_a = np.where(abo, log_abo, np.where(tabulated, log_tab, log_unsold))
    exponent = np.where(abo, 1.0 - alpha, 0.6)
    return log_a, exponent


def weak_line_fade(eta0: torch.Tensor, min_eta: float) -> torch.Tensor:
    """Weight of each line in each star: 0 below min_eta / 2, 1 above min_eta, a smooth
    step between (so spectra stay differentiable in the labels)."""
    if min_eta <= 0.0:
        return torch.ones_like(eta0)
    t = ((eta0 - 0.5 * min_eta) / (0.5 * min_eta)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def edge_taper(x: torch.Tensor, half: int) -> torch.Tensor:
    """1 within 80 % of a window of ``half`` pixels, falling to 0 at its edge as a raised
    cosine: a profile cut at its window then moves smoothly with the radial velocity."""
    inner = 0.8 * half
    t = ((x.abs() - inner) / (half - inner)).clamp(0.0, 1.0)
    return 0.5 * (1.0 + torch.cos(math.pi * t))


class LineFormation(torch.nn.Module):
    """Labels (B, K) and an observed-frame ln λ grid -> flux relative to the continuum.

    The grid is uniform in ln λ (start ``ln_lam0``, step ``step``, ``npix`` samples); the rest
    frame of each star is shifted by its radial velocity. ``lines`` are the candidates: those
    too weak to matter in every reference atmosphere are dropped, and each kept line gets
    the narrowest window that holds its profile.
    """

    def __init__(self, lines: LineList, constants: FormationConstants = CALIBRATED,
                 min_eta: float = MIN_ETA) -> None:
        super().__init__()
        _, species = load_atomic_data()
        self.constants = constants
        self.min_eta = min_eta
        self.line_strength = constants.line_strength
        self.hydrogen_strength = constants.hydrogen_strength
        self._register(lines, species)
        eta_max, needed = self._reference_strength()
        keep = (eta_max >= 0.5 * min_eta) | lines.is_hydrogen
        window = np.searchsorted(np.array(WINDOW_LN[:-1]), needed)
        window = np.minimum(window, len(WINDOW_LN) - 2)
        window[lines.is_hydrogen] = len(WINDOW_LN) - 1
        self.lines = lines.select(keep)
        self._register(self.lines, species)
        self.register_buffer("window", torch.as_tensor(window[keep]), persistent=False)

    def _register(self, lines: LineList, species) -> None:
        """Per-line and per-element buffers of ``lines``."""
        elements, line_el = np.unique(lines.z, return_inverse=True)
        for name, value in lines.tensors().items():
            self.register_buffer(name, value, persistent=False)
        mass = species.mass[lines.z]
        chi_ion = species.chi_ion[elements]  # (E, 2)
        log_a6, e6 = _vdw_terms(lines, chi_ion[line_el, lines.ion - 1], mass)
        symbols = [SYMBOLS[z - 1] for z in elements]
        label = [INDEX[ABUNDANCE_LABEL[s]] if s in ABUNDANCE_LABEL else -1 for s in symbols]
        f64 = torch.float64
        buffers = {
            "line_el": torch.as_tensor(line_el, dtype=torch.long),
            "mass": torch.as_tensor(mass, dtype=f64),
            "log_a6": torch.as_tensor(log_a6, dtype=f64),
            "e6": torch.as_tensor(e6, dtype=f64),
            "is_h": torch.as_tensor(lines.is_hydrogen),
            "el_partition": torch.as_tensor(species.partition[elements], dtype=f64),
            "el_chi_ion": torch.as_tensor(chi_ion, dtype=f64),
            "el_log_eps": torch.as_tensor([SOLAR_A[s] - 12.0 for s in symbols], dtype=f64),
            "el_label": torch.as_tensor(label, dtype=torch.long),
            "el_primordial": torch.as_tensor([s in PRIMORDIAL for s in symbols]),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)
        rad = np.where(lines.gamma_rad > 0, lines.gamma_rad, 0.2223e16 / lines.wave**2)
        self.register_buffer("gamma_rad", torch.as_tensor(rad, dtype=f64), persistent=False)
        # hydrogen: lower level from the excitation energy, upper from the wavelength
        n_low = np.round(np.sqrt(13.598 / np.maximum(13.598 - lines.chi, 1e-3)))
        n_up = np.round(1.0 / np.sqrt(np.maximum(1.0 / n_low**2 - 911.27 / lines.wave, 1e-6)))
        stark_n = np.where(lines.is_hydrogen, (n_up**2 - n_low**2) ** STARK_N_EXP, 0.0)
        self.register_buffer("stark_n", torch.as_tensor(stark_n, dtype=f64), persistent=False)

    def _reference_strength(self) -> tuple[np.ndarray, np.ndarray]:
        """Per line: the largest η₀ over :data:`REFERENCE_ATMOSPHERES`, and the half-width
        (ln λ) its profile needs to fall to :data:`WING_ETA` there."""
        labels = torch.cat([typical(1, teff=t, logg=g, fe_h=z, vmic=2.0)
                            for t, g, z in REFERENCE_ATMOSPHERES])
        with torch.no_grad():
            p = self.line_parameters(labels)
        eta, a, dlam = p["eta0"].numpy(), p["a"].numpy(), p["dlam_d"].numpy()
        ratio = np.maximum(eta / WING_ETA, 1.0)
        v_core = np.sqrt(np.log(ratio))
        v_wing = np.sqrt(eta * a / (math.sqrt(math.pi) * WING_ETA))
        half = np.maximum(v_core, v_wing) * dlam / self.wave.numpy()[None, :]
        return eta.max(axis=0), half.max(axis=0)

    def _log_eps(self, labels: torch.Tensor) -> torch.Tensor:
        """log10(N_X / N_H) per star and element: (B, E)."""
        feh = labels[:, INDEX["fe_h"]][:, None]
        extra = labels[:, self.el_label.clamp(min=0)] * (self.el_label >= 0)
        scaled = torch.where(self.el_primordial[None, :], torch.zeros_like(extra), feh + extra)
        return self.el_log_eps.to(labels.dtype)[None, :] + scaled

    def _partition(self, temp: torch.Tensor) -> torch.Tensor:
        """U of stages I–III per star and element at ``temp`` (B,): (B, E, 3)."""
        ln_t = torch.log(temp.clamp(1000.0, 16000.0))[:, None, None, None]
        powers = ln_t ** torch.arange(6, dtype=temp.dtype, device=temp.device)
        return torch.exp((self.el_partition.to(temp.dtype)[None] * powers).sum(-1))

    def line_parameters(self, labels: torch.Tensor, index: torch.Tensor | None = None
                        ) -> dict[str, torch.Tensor]:
        """Per star and line (B, L): η₀ (line-centre opacity over continuous), the damping
        parameter a and the Doppler width Δλ_D (Å), for all lines or those in ``index``."""
        c = self.constants

        def take(t: torch.Tensor) -> torch.Tensor:
            return t if index is None else t[index]

        dtype = labels.dtype
        teff, logg, feh = (labels[:, INDEX[n]] for n in ("teff", "logg", "fe_h"))
        vmic = labels[:, INDEX["vmic"]]
        t_line = c.layer_temperature * teff
        p_gas = gas_pressure(teff, logg, feh, c.solar_pressure)
        pe, x_h = electron_pressure(t_line, p_gas, feh)

        lam = take(self.wave).to(dtype)[None, :]
        el, ion = take(self.line_el), take(self.ion)
        is_h = take(self.is_h)[None, :]
        theta = 5040.0 / t_line[:, None]
        u = self._partition(t_line)[:, el]  # (B, L, 3)
        chi1 = self.el_chi_ion[el, 0].to(dtype)[None, :]
        chi2 = self.el_chi_ion[el, 1].to(dtype)[None, :]
        log_pe = torch.log10(pe)[:, None]
        t_col = t_line[:, None]
        r1 = 10 ** (log10_saha(t_col, chi1, u[..., 0], u[..., 1]) - log_pe)  # N_II / N_I
        r2 = 10 ** (log10_saha(t_col, chi2, u[..., 1], u[..., 2]) - log_pe)  # N_III / N_II
        f_neutral = 1.0 / (1.0 + r1 * (1.0 + r2))
        frac = torch.where(ion[None, :] == 1, f_neutral, f_neutral * r1)
        frac = torch.where(is_h, 1.0 - x_h[:, None], frac)
        u_stage = torch.where(ion[None, :] == 1, u[..., 0], u[..., 1])
        u_stage = torch.where(is_h, torch.full_like(u_stage, 2.0), u_stage)
        log_eps = self._log_eps(labels)[:, el]
        mass = take(self.mass).to(dtype)[None, :]
        v_dopp = torch.sqrt(AMU_KMS2 * t_col / mass + vmic[:, None] ** 2)  # km/s
        dlam_d = lam * v_dopp / C_KMS  # Å
        stim = -torch.expm1(-HC_OVER_K / (lam * t_col))
        log_kappa_l = (math.log10(0.02654 / C_CGS) + 2 * torch.log10(lam * 1e-8)
                       + take(self.loggf).to(dtype)[None, :] + log_eps + torch.log10(frac)
                       - theta * take(self.chi).to(dtype)[None, :] - torch.log10(u_stage)
                       + torch.log10(stim) - torch.log10(math.sqrt(math.pi) * dlam_d * 1e-8))
        kappa_c = continuous_opacity(lam.expand(labels.shape[0], -1), t_col, pe[:, None],
                                     p_gas[:, None], x_h[:, None])
        strength = torch.where(is_h, torch.full_like(lam, self.line_strength
                                                     * self.hydrogen_strength),
                               torch.full_like(lam, self.line_strength))
        log_ratio = log_kappa_l - torch.log10(kappa_c)
        log_ratio = torch.where(is_h, c.hydrogen_exponent * log_ratio, log_ratio)
        eta0 = strength * 10 ** log_ratio

        # damping a = γ λ² / (4π c Δλ_D): radiative + van der Waals (+ Stark for hydrogen)
        n_h = p_gas[:, None] * (1.0 - x_h[:, None]) / (1.1 * K_CGS * t_col)
        ln_vbar = 0.5 * (torch.log(8 * K_CGS * t_col / math.pi)
                         + torch.log(1.0 / (1.008 * AMU_G) + 1.0 / (mass * AMU_G)))
        log_a6, e6 = take(self.log_a6).to(dtype), take(self.e6).to(dtype)
        gamma6 = c.damping_scale * n_h * torch.exp(log_a6 * math.log(10.0) + e6 * ln_vbar)
        gamma = take(self.gamma_rad).to(dtype)[None, :] + gamma6
        stark = (c.stark_scale * take(self.stark_n).to(dtype)[None, :]
                 * (pe[:, None] / 30.0))
        gamma = torch.where(is_h, gamma + stark, gamma)
        a = gamma * (lam * 1e-8) ** 2 / (4 * math.pi * C_CGS * dlam_d * 1e-8)
        return {"eta0": eta0, "a": a, "dlam_d": dlam_d}

    def beta(self, wave_a: torch.Tensor, teff: torch.Tensor) -> torch.Tensor:
        """Source-function gradient β at rest wavelengths (B, N) for Teff (B,)."""
        x = HC_OVER_K / (wave_a * teff[:, None])
        return self.constants.beta_scale * x / -torch.expm1(-x)

    def forward(self, labels: torch.Tensor, ln_lam0: float, step: float, npix: int
                ) -> torch.Tensor:
        dtype, device = labels.dtype, labels.device
        teff, logg = labels[:, INDEX["teff"]], labels[:, INDEX["logg"]]
        rv = labels[:, INDEX["rv"]]
        b = labels.shape[0]
        ln_shift = torch.log1p(rv / C_KMS)  # observed ln λ = rest ln λ + shift
        # Positions in float64 whatever the working precision: a float32 ln λ is only good
        # to 0.3 km/s, which moves steep line flanks visibly.
        j = torch.arange(npix, device=device, dtype=torch.float64)
        offset = step * j[None, :] - ln_shift.to(torch.float64)[:, None]
        rest_wave64 = math.exp(ln_lam0) * torch.exp(offset)  # (B, N), Å
        rest_wave = rest_wave64.to(dtype)
        eta = torch.zeros(b, npix, dtype=dtype, device=device)
        shift = ln_shift.to(torch.float64)
        ln_wave = torch.log(self.wave)
        for group, half_ln in enumerate(WINDOW_LN):
            # the lines of this window class whose window reaches the grid for some star
            near = ((ln_wave + float(shift.max()) >= ln_lam0 - half_ln)
                    & (ln_wave + float(shift.min()) <= ln_lam0 + step * (npix - 1) + half_ln))
            sel = torch.nonzero((self.window == group) & near).squeeze(1)
            if sel.numel() == 0:
                continue
            p = self.line_parameters(labels, sel)
            # lines fade out below MIN_ETA in each star; those faded out in every star of
            # the batch are skipped (the result does not depend on the batch)
            weight = weak_line_fade(p["eta0"], self.min_eta)
            used = torch.nonzero(weight.amax(dim=0) > 0).squeeze(1)
            if used.numel() == 0:
                continue
            sel, weight = sel[used], weight[:, used]
            p = {k: v[:, used] for k, v in p.items()}
            half = max(1, int(math.ceil(half_ln / step)))
            offsets = torch.arange(-half, half + 1, device=device)
            centre = (ln_wave[sel][None, :] + shift[:, None] - ln_lam0) / step  # (B, l)
            nearest = torch.round(centre)
            idx = nearest.long()[:, :, None] + offsets  # (B, l, W)
            inside = (idx >= 0) & (idx < npix)
            idx_c = idx.clamp(0, npix - 1)
            # rest-frame distance from the line centre, from the pixel offset (exact in ln λ)
            x = offsets.to(dtype) - (centre - nearest).to(dtype)[:, :, None]  # pixels
            lam = self.wave[sel].to(dtype)[None, :, None]
            v = lam * torch.expm1(step * x) / p["dlam_d"][:, :, None]
            prof = ((p["eta0"] * weight)[:, :, None] * pseudo_voigt(v, p["a"][:, :, None])
                    * edge_taper(x, half))
            prof = torch.where(inside, prof, torch.zeros_like(prof))
            eta = eta.scatter_add(1, idx_c.reshape(b, -1), prof.reshape(b, -1))

        # --- Milne–Eddington emergent flux, molecules, continuum ------------------------
        beta = self.beta(rest_wave, teff)
        residual = (1.0 + beta / (1.0 + eta)) / (1.0 + beta)
        residual = residual * molecular_transmission(rest_wave, teff, logg, labels)
        log_b = log10_planck(rest_wave, teff[:, None])
        return 10 ** (log_b - continuum_norm(teff)[:, None]) * residual

    def equivalent_widths(self, labels: torch.Tensor, index: torch.Tensor | np.ndarray
                          ) -> torch.Tensor:
        """Equivalent widths (Å) of the lines ``index`` (M,) each alone, (B, M): the
        Milne–Eddington residual integrated over ±(window) around the line centre."""
        index = torch.as_tensor(index, dtype=torch.long)
        p = self.line_parameters(labels)
        eta0, a, dlam = (p[k][:, index] for k in ("eta0", "a", "dlam_d"))
        half = torch.as_tensor(WINDOW_LN, dtype=labels.dtype)[self.window[index]]
        lam = self.wave[index].to(labels.dtype)
        x = torch.linspace(-1.0, 1.0, 4001, dtype=labels.dtype)
        dl = (half * lam)[None, :, None] * x  # (1, M, X), Å
        v = dl / dlam[:, :, None]
        eta = eta0[:, :, None] * pseudo_voigt(v, a[:, :, None])
        beta = self.beta(lam.expand(labels.shape[0], -1), labels[:, INDEX["teff"]])[:, :, None]
        depth = 1.0 - (1.0 + beta / (1.0 + eta)) / (1.0 + beta)
        return torch.trapezoid(depth, dl, dim=-1)

def continuum_norm(teff: torch.Tensor) -> torch.Tensor:
    """log10 of the mean Planck B_λ over the S/N window, the flux unit of the generator."""
    w = torch.linspace(*SNR_WINDOW_A, 64, dtype=teff.dtype, device=teff.device)
    return torch.log10((10 ** log10_planck(w[None, :], teff[:, None])).mean(dim=1))


def molecular_transmission(wave_a: torch.Tensor, teff: torch.Tensor, logg: torch.Tensor,
                           labels: torch.Tensor) -> torch.Tensor:
    """exp(−τ) of TiO bands (sharp heads degrading to the red, Teff ≲ 4000 K) and the CH G
    band (Teff ≲ 6000 K); optical depths grow with metallicity and gas pressure."""
    feh = labels[:, INDEX["fe_h"]][:, None]
    alpha = labels[:, INDEX["alpha_fe"]][:, None]
    t = teff[:, None]
    p_scale = (10 ** (0.64 * (logg[:, None] - 4.44))) ** 0.5
    tio = 1.2 * torch.sigmoid((3900.0 - t) / 120.0) * 10 ** (feh + 0.5 * alpha) * p_scale
    lo, hi = CH_BAND_A
    ch = 0.35 * torch.sigmoid((5800.0 - t) / 250.0) * 10**feh
    tau = torch.zeros_like(wave_a)
    # Bands too weak to matter anywhere in the batch are skipped (they cost most of the
    # time of a hot-star batch); the result changes by less than 1e-6.
    if float(tio.max()) > 1e-6:
        for head in TIO_HEADS_A:
            d = wave_a - head
            tau = tau + tio * torch.sigmoid(d / 0.5) * torch.exp(-torch.clamp(d, min=0.0)
                                                                 / 120.0)
    if float(ch.max()) > 1e-6:
        tau = tau + ch * torch.sigmoid((wave_a - lo) / 0.5) * torch.sigmoid((hi - wave_a) / 0.5)
    return torch.exp(-tau)
