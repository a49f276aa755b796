"""Semi-analytic LTE line formation in one representative layer (torch, differentiable).

For labels (B, K) and rest-frame wavelengths (B, N) in Å this returns the emergent flux
relative to the continuum mean over 6180–6680 Å:

* continuum: Planck function at Teff;
* continuous opacity per hydrogen atom: H⁻ bound–free (Gray's fit), hydrogen bound–free
  from the levels above the local edge, electron scattering;
* electron pressure from hydrogen and metal ionisation (Saha), at a gas pressure that
  scales with g^0.64 as in grey atmospheres;
* line opacity at line centre from Saha–Boltzmann populations and gf, relative to the
  continuum (η₀), with a pseudo-Voigt profile: thermal + microturbulent Doppler width,
  radiative + van der Waals damping growing with gas pressure, Stark damping of hydrogen
  growing with electron pressure;
* Milne–Eddington saturation: r = (1 + β / (1 + Σ η)) / (1 + β), so strong lines
  saturate and grow through their damping wings (the curve of growth);
* molecular bands of TiO (M stars) and the CH G band (cool stars), as absorption edges.
"""

from __future__ import annotations

import math

import torch

from ..quantities import C_KMS, SNR_WINDOW_A
from .labels import INDEX
from .linelist import ELEMENTS, FOREST, HYDROGEN, STRONG, LineList

C_CGS = 2.99792458e10
HC_OVER_K = 1.438777e8  # Å K
K_EV = 8.617333e-5  # eV / K
AMU_KMS2 = 2 * 1.380649e-16 / 1.66053907e-24 / 1e10  # 2k/m_u in (km/s)^2 per K
LOG_SAHA_CONST = -0.4768  # log10[(2π m_e)^1.5 k^2.5 / h^3], cgs
#: Stark damping of hydrogen lines: γ = STARK_H (P_e / 30 dyn cm⁻²)^STARK_EXP s⁻¹.
STARK_H = 3.0e10
STARK_EXP = 1.0

#: Half-width, in ln λ, of the window over which each group's profiles are evaluated.
WINDOW_LN = {HYDROGEN: 0.02, STRONG: 0.004, FOREST: 2.5e-4}

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


def gas_pressure(teff: torch.Tensor, logg: torch.Tensor, feh: torch.Tensor) -> torch.Tensor:
    """Gas pressure (dyn cm⁻²) of the line-forming layer: solar 1.2e5 at log g 4.44, ∝ g^0.64,
    lower in hotter stars (more opacity), higher in metal-poor stars (less opacity)."""
    return 1.2e5 * 10 ** (0.64 * (logg - 4.44)) * (teff / 5777.0) ** -5.0 * 10 ** (-0.2 * feh)


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


class LineFormation(torch.nn.Module):
    """Labels (B, K) and an observed-frame ln λ grid -> flux relative to the continuum.

    The grid is uniform in ln λ (start ``ln_lam0``, step ``step``, ``npix`` samples); the rest
    frame of each star is shifted by its radial velocity. ``line_strength`` scales every η₀
    and ``hydrogen_strength`` those of hydrogen once more (calibration constants of the
    single-layer approximation: hydrogen lines form over a much deeper range of layers).
    """

    def __init__(self, lines: LineList, line_strength: float = 3.0e-3,
                 hydrogen_strength: float = 10.0, beta_scale: float = 0.6) -> None:
        super().__init__()
        t = lines.tensors()
        for name, value in t.items():
            self.register_buffer(name, value, persistent=False)
        self.register_buffer("group", torch.as_tensor(lines.group), persistent=False)
        els = [ELEMENTS[s] for s in lines.elements]
        self.register_buffer("mass", torch.tensor([e.mass for e in els], dtype=torch.float64),
                             persistent=False)
        self.register_buffer("solar_a", torch.tensor([e.solar_a for e in els],
                                                     dtype=torch.float64), persistent=False)
        self.register_buffer("chi_ion", torch.tensor([[e.chi_ion1, e.chi_ion2] for e in els],
                                                     dtype=torch.float64), persistent=False)
        self.register_buffer("u", torch.tensor([e.u for e in els], dtype=torch.float64),
                             persistent=False)
        self.abundance_label = [e.abundance_label for e in els]
        self.is_hydrogen = [e.symbol == "H" for e in els]
        self.register_buffer("line_is_h", torch.tensor(self.is_hydrogen)[self.element],
                             persistent=False)
        self.line_strength = line_strength
        self.hydrogen_strength = hydrogen_strength
        self.beta_scale = beta_scale

    def _element_log_eps(self, labels: torch.Tensor) -> torch.Tensor:
        """log10(N_X / N_H) per star and element: (B, E)."""
        feh = labels[:, INDEX["fe_h"]]
        cols = []
        for e, label in enumerate(self.abundance_label):
            if self.is_hydrogen[e]:
                cols.append(torch.zeros_like(feh))
                continue
            log_eps = self.solar_a[e].to(labels.dtype) - 12.0 + feh
            if label is not None:
                log_eps = log_eps + labels[:, INDEX[label]]
            cols.append(log_eps)
        return torch.stack(cols, dim=1)

    def forward(self, labels: torch.Tensor, ln_lam0: float, step: float, npix: int
                ) -> torch.Tensor:
        dtype, device = labels.dtype, labels.device
        teff, logg, feh = (labels[:, INDEX[n]] for n in ("teff", "logg", "fe_h"))
        vmic, rv = labels[:, INDEX["vmic"]], labels[:, INDEX["rv"]]
        b = labels.shape[0]
        ln_shift = torch.log1p(rv / C_KMS)  # observed ln λ = rest ln λ + shift
        # Positions in float64 whatever the working precision: a float32 ln λ is only good
        # to 0.3 km/s, which moves steep line flanks visibly.
        j = torch.arange(npix, device=device, dtype=torch.float64)
        offset = step * j[None, :] - ln_shift.to(torch.float64)[:, None]
        rest_wave64 = math.exp(ln_lam0) * torch.exp(offset)  # (B, N), Å
        rest_wave = rest_wave64.to(dtype)

        # Metal lines form in a layer at 0.9 Teff; hydrogen lines deeper, at Teff.
        t_line = 0.9 * teff
        p_gas = gas_pressure(teff, logg, feh)
        pe, x_h = electron_pressure(t_line, p_gas, feh)
        pe_deep, x_h_deep = electron_pressure(teff, p_gas, feh)
        cont = lambda w: continuous_opacity(  # noqa: E731 - (B, ·) opacity at wavelengths w
            w, t_line[:, None], pe[:, None], p_gas[:, None], x_h[:, None])

        # --- line-centre opacity ratio η₀ for every (star, line): (B, L) ---------------
        lam = self.wave.to(dtype)[None, :]
        el, ion = self.element, self.ion
        is_h = self.line_is_h[None, :]
        theta = torch.where(is_h, 5040.0 / teff[:, None], 5040.0 / t_line[:, None])
        chi1 = self.chi_ion[el, 0].to(dtype)[None, :]
        chi2 = self.chi_ion[el, 1].to(dtype)[None, :]
        u = self.u[el].to(dtype)  # (L, 3)
        log_phi1 = log10_saha(t_line[:, None], chi1, u[None, :, 0], u[None, :, 1])
        log_phi2 = log10_saha(t_line[:, None], chi2, u[None, :, 1], u[None, :, 2])
        log_pe = torch.log10(pe)[:, None]
        r1 = 10 ** (log_phi1 - log_pe)  # N_II / N_I
        r2 = 10 ** (log_phi2 - log_pe)  # N_III / N_II
        f_neutral = 1.0 / (1.0 + r1 * (1.0 + r2))
        frac = torch.where(ion[None, :] == 1, f_neutral, f_neutral * r1)
        frac = torch.where(is_h, 1.0 - x_h_deep[:, None], frac)
        u_stage = torch.where(ion[None, :] == 1, u[None, :, 0], u[None, :, 1])
        log_eps = self._element_log_eps(labels)[:, el]  # (B, L)
        mass = self.mass[el].to(dtype)[None, :]
        v_dopp = torch.sqrt(AMU_KMS2 * t_line[:, None] / mass + vmic[:, None] ** 2)  # km/s
        dlam_d = lam * v_dopp / C_KMS  # Å
        stim = -torch.expm1(-HC_OVER_K / (lam * t_line[:, None]))
        log_kappa_l = (math.log10(0.02654 / C_CGS) + 2 * torch.log10(lam * 1e-8)
                       + self.loggf.to(dtype)[None, :] + log_eps + torch.log10(frac)
                       - theta * self.chi.to(dtype)[None, :] - torch.log10(u_stage)
                       + torch.log10(stim) - torch.log10(math.sqrt(math.pi) * dlam_d * 1e-8))
        kappa_c_line = cont(lam.expand(b, -1))
        eta0 = self.line_strength * 10 ** (log_kappa_l - torch.log10(kappa_c_line))
        eta0 = torch.where(is_h, self.hydrogen_strength * eta0, eta0)

        # --- damping parameter a = γ λ² / (4π c Δλ_D): (B, L) ------------------------
        gamma = (0.2223e16 / lam**2
                 + 2.0e10 * (p_gas[:, None] / 1.2e5) * (t_line[:, None] / 5777.0) ** -0.7)
        gamma = torch.where(is_h, gamma + STARK_H * (pe_deep[:, None] / 30.0) ** STARK_EXP,
                            gamma)
        a = gamma * (lam * 1e-8) ** 2 / (4 * math.pi * C_CGS * dlam_d * 1e-8)

        # --- total line opacity on the grid, summed over windows ----------------------
        eta = torch.zeros(b, npix, dtype=dtype, device=device)
        centre = ((torch.log(self.wave)[None, :] + ln_shift.to(torch.float64)[:, None]
                   - ln_lam0) / step)  # (B, L), in samples, float64
        for group, half_ln in WINDOW_LN.items():
            sel = torch.nonzero(self.group == group).squeeze(1)
            if sel.numel() == 0:
                continue
            half = max(1, int(math.ceil(half_ln / step)))
            offsets = torch.arange(-half, half + 1, device=device)
            idx = torch.round(centre[:, sel]).long()[:, :, None] + offsets  # (B, l, W)
            inside = (idx >= 0) & (idx < npix)
            idx_c = idx.clamp(0, npix - 1)
            w = rest_wave64.gather(1, idx_c.reshape(b, -1)).reshape(idx.shape)
            v = ((w - self.wave[None, sel, None]).to(dtype)) / dlam_d[:, sel, None]
            prof = eta0[:, sel, None] * pseudo_voigt(v, a[:, sel, None])
            prof = torch.where(inside, prof, torch.zeros_like(prof))
            eta = eta.scatter_add(1, idx_c.reshape(b, -1), prof.reshape(b, -1))

        # --- Milne–Eddington emergent flux, molecules, continuum ------------------------
        x = HC_OVER_K / (rest_wave * teff[:, None])
        beta = self.beta_scale * x / -torch.expm1(-x)
        residual = (1.0 + beta / (1.0 + eta)) / (1.0 + beta)
        residual = residual * molecular_transmission(rest_wave, teff, logg, labels)
        log_b = log10_planck(rest_wave, teff[:, None])
        return 10 ** (log_b - continuum_norm(teff)[:, None]) * residual


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
