"""Atomic data and the line list: strong lines at their laboratory wavelengths plus a seeded
forest of weaker lines per species.

Strong-line wavelengths are air values from standard tables (converted to vacuum here);
excitation potentials and log gf are rounded literature values. The forest has realistic
distributions of excitation potential and log gf but random wavelengths: it makes spectra
look and behave like real ones (blends, metallicity sensitivity), not match real stars.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..spectra.units import air_to_vacuum


@dataclass(frozen=True)
class Element:
    """Atomic data of one element: mass (u), ionisation energies (eV) of the neutral and
    singly ionised atom, solar abundance A(X) = log10(N_X/N_H) + 12, partition functions of
    the first three stages (held constant), and the label that sets [X/Fe] (None: scales
    with [Fe/H] alone; H does not scale)."""

    symbol: str
    mass: float
    chi_ion1: float
    chi_ion2: float
    solar_a: float
    u: tuple[float, float, float]
    abundance_label: str | None


ELEMENTS: dict[str, Element] = {e.symbol: e for e in (
    Element("H", 1.008, 13.598, 1e9, 12.00, (2.0, 1.0, 1.0), None),
    Element("Li", 6.94, 5.392, 75.64, 1.05, (2.0, 1.0, 2.0), "li_fe"),
    Element("C", 12.011, 11.260, 24.38, 8.43, (9.0, 6.0, 1.0), None),
    Element("O", 15.999, 13.618, 35.12, 8.69, (9.0, 4.0, 9.0), "alpha_fe"),
    Element("Na", 22.990, 5.139, 47.29, 6.24, (2.0, 1.0, 6.0), None),
    Element("Mg", 24.305, 7.646, 15.04, 7.60, (1.0, 2.0, 1.0), "mg_fe"),
    Element("Si", 28.085, 8.152, 16.35, 7.51, (9.5, 5.8, 1.0), "alpha_fe"),
    Element("Ca", 40.078, 6.113, 11.87, 6.34, (1.0, 2.0, 1.0), "ca_fe"),
    Element("Ti", 47.867, 6.828, 13.58, 4.95, (25.0, 50.0, 20.0), "alpha_fe"),
    Element("Cr", 51.996, 6.767, 16.49, 5.64, (10.0, 7.0, 20.0), None),
    Element("Fe", 55.845, 7.902, 16.19, 7.50, (25.0, 40.0, 25.0), None),
    Element("Ni", 58.693, 7.640, 18.17, 6.22, (30.0, 10.0, 20.0), None),
)}

#: Line groups, evaluated with different half-widths of their profile windows.
HYDROGEN, STRONG, FOREST = 0, 1, 2

# (element, ion stage 1 = neutral, air wavelength Å, excitation eV, log gf)
_STRONG_AIR = [
    # Balmer series (lower level n = 2, 10.20 eV)
    ("H", 1, 6562.80, 10.199, 0.710), ("H", 1, 4861.33, 10.199, -0.020),
    ("H", 1, 4340.46, 10.199, -0.447), ("H", 1, 4101.74, 10.199, -0.753),
    ("H", 1, 3970.07, 10.199, -0.993), ("H", 1, 3889.05, 10.199, -1.192),
    ("H", 1, 3835.38, 10.199, -1.362), ("H", 1, 3797.90, 10.199, -1.511),
    ("H", 1, 3770.63, 10.199, -1.645),
    # Paschen series (lower level n = 3, 12.09 eV)
    ("H", 1, 9229.01, 12.087, -0.738), ("H", 1, 9014.91, 12.087, -0.878),
    ("H", 1, 8862.78, 12.087, -1.004), ("H", 1, 8750.47, 12.087, -1.117),
    ("H", 1, 8665.02, 12.087, -1.220), ("H", 1, 8598.39, 12.087, -1.314),
    ("H", 1, 8545.38, 12.087, -1.401), ("H", 1, 8502.48, 12.087, -1.482),
    ("H", 1, 8467.25, 12.087, -1.558), ("H", 1, 8437.95, 12.087, -1.629),
    # Ca II H & K and the near-infrared triplet
    ("Ca", 2, 3933.66, 0.000, 0.135), ("Ca", 2, 3968.47, 0.000, -0.180),
    ("Ca", 2, 8498.02, 1.692, -1.312), ("Ca", 2, 8542.09, 1.700, -0.362),
    ("Ca", 2, 8662.14, 1.692, -0.623),
    # Ca I
    ("Ca", 1, 4226.73, 0.000, 0.244), ("Ca", 1, 6122.22, 1.886, -0.316),
    ("Ca", 1, 6162.17, 1.899, -0.090), ("Ca", 1, 6439.08, 2.526, 0.390),
    # Mg b triplet and other Mg I
    ("Mg", 1, 5167.32, 2.709, -0.870), ("Mg", 1, 5172.68, 2.712, -0.393),
    ("Mg", 1, 5183.60, 2.717, -0.167), ("Mg", 1, 4702.99, 4.346, -0.440),
    ("Mg", 1, 5528.41, 4.346, -0.498), ("Mg", 1, 8806.76, 4.346, -0.137),
    ("Mg", 2, 4481.13, 8.864, 0.740),
    # Na D and the Li resonance doublet (blended)
    ("Na", 1, 5889.95, 0.000, 0.108), ("Na", 1, 5895.92, 0.000, -0.194),
    ("Na", 1, 8183.26, 2.102, 0.237), ("Na", 1, 8194.82, 2.104, 0.492),
    ("Li", 1, 6707.76, 0.000, -0.002), ("Li", 1, 6707.91, 0.000, -0.303),
    # strong Fe I and Fe II
    ("Fe", 1, 4045.81, 1.485, 0.280), ("Fe", 1, 4383.55, 1.485, 0.200),
    ("Fe", 1, 4271.76, 1.485, -0.164), ("Fe", 1, 4325.76, 1.608, 0.006),
    ("Fe", 1, 5269.54, 0.859, -1.321), ("Fe", 1, 5328.04, 0.915, -1.466),
    ("Fe", 1, 5371.49, 0.958, -1.645), ("Fe", 1, 5397.13, 0.915, -1.993),
    ("Fe", 1, 5405.77, 0.990, -1.844), ("Fe", 1, 5429.70, 0.958, -1.879),
    ("Fe", 1, 6191.56, 2.433, -1.416), ("Fe", 1, 6230.72, 2.559, -1.281),
    ("Fe", 1, 6252.56, 2.404, -1.687), ("Fe", 1, 6393.60, 2.433, -1.432),
    ("Fe", 1, 6494.98, 2.404, -1.273), ("Fe", 1, 8688.62, 2.176, -1.212),
    ("Fe", 1, 8824.22, 2.198, -1.540),
    ("Fe", 2, 4923.93, 2.891, -1.320), ("Fe", 2, 5018.44, 2.891, -1.220),
    ("Fe", 2, 5169.03, 2.891, -1.303), ("Fe", 2, 5316.61, 3.153, -1.850),
    ("Fe", 2, 6456.38, 3.903, -2.075),
    # O I triplet, Si II, Ti II: hot-star and alpha-element features
    ("O", 1, 7771.94, 9.146, 0.369), ("O", 1, 7774.17, 9.146, 0.223),
    ("O", 1, 7775.39, 9.146, 0.002), ("Si", 2, 6347.11, 8.121, 0.169),
    ("Si", 2, 6371.37, 8.121, -0.082), ("Ti", 2, 4468.49, 1.131, -0.600),
    ("Ti", 2, 4501.27, 1.116, -0.770),
]

#: Forest lines per species: (element, ion stage, number of lines per 1000 Å).
_FOREST = [("Fe", 1, 60), ("Fe", 2, 8), ("Ti", 1, 12), ("Ti", 2, 6), ("Cr", 1, 10),
           ("Ni", 1, 10), ("Ca", 1, 4), ("Mg", 1, 2), ("Si", 1, 5), ("Na", 1, 1),
           ("O", 1, 1), ("C", 1, 3)]


@dataclass(frozen=True)
class LineList:
    """Lines as arrays of shape (N,): vacuum wavelength (Å), element index into
    ``elements``, ion stage (1 or 2), excitation potential (eV), log gf, and group."""

    wave: np.ndarray
    element: np.ndarray
    ion: np.ndarray
    chi: np.ndarray
    loggf: np.ndarray
    group: np.ndarray
    elements: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.wave.size)

    def select(self, keep: np.ndarray) -> LineList:
        return LineList(self.wave[keep], self.element[keep], self.ion[keep], self.chi[keep],
                        self.loggf[keep], self.group[keep], self.elements)

    def tensors(self, device: torch.device | str = "cpu", dtype=torch.float64
                ) -> dict[str, torch.Tensor]:
        return {
            "wave": torch.as_tensor(self.wave, dtype=dtype, device=device),
            "element": torch.as_tensor(self.element, dtype=torch.long, device=device),
            "ion": torch.as_tensor(self.ion, dtype=torch.long, device=device),
            "chi": torch.as_tensor(self.chi, dtype=dtype, device=device),
            "loggf": torch.as_tensor(self.loggf, dtype=dtype, device=device),
        }


#: Width of the blocks the forest is drawn in, Å: each block has its own random stream, so a
#: star's forest at a wavelength does not depend on the range an instrument asks for.
FOREST_BLOCK_A = 50.0


@lru_cache(maxsize=8)
def build_linelist(lo: float = 3500.0, hi: float = 10000.0, seed: int = 20260101,
                   forest_scale: float = 1.0) -> LineList:
    """The strong lines and a forest seeded by ``seed``, with vacuum wavelengths in [lo, hi] Å.

    ``forest_scale`` multiplies the number of forest lines (0 for strong lines only). The
    forest in any wavelength interval is the same for every [lo, hi] that contains it.
    """
    symbols = tuple(ELEMENTS)
    rows = []
    for el, ion, air, chi, loggf in _STRONG_AIR:
        group = HYDROGEN if el == "H" else STRONG
        rows.append((float(air_to_vacuum(np.array([air]))[0]), symbols.index(el), ion, chi,
                     loggf, group))
    for block in range(int(np.floor(lo / FOREST_BLOCK_A)), int(np.ceil(hi / FOREST_BLOCK_A))):
        rng = np.random.default_rng([seed, block])
        b_lo, b_hi = block * FOREST_BLOCK_A, (block + 1) * FOREST_BLOCK_A
        for el, ion, per_1000 in _FOREST:
            n = rng.poisson(per_1000 * FOREST_BLOCK_A / 1000.0 * forest_scale)
            wave = np.exp(rng.uniform(np.log(b_lo), np.log(b_hi), n))
            chi = rng.uniform(0.0, 5.0 if ion == 1 else 6.0, n)
            loggf = np.clip(rng.normal(-1.8, 0.9, n), -5.0, 0.5)
            rows += [(w, symbols.index(el), ion, c, g, FOREST)
                     for w, c, g in zip(wave, chi, loggf)]
    arr = np.array(rows, dtype=np.float64)
    keep = (arr[:, 0] >= lo) & (arr[:, 0] <= hi)
    arr = arr[keep][np.argsort(arr[keep][:, 0])]
    return LineList(wave=arr[:, 0], element=arr[:, 1].astype(np.int64),
                    ion=arr[:, 2].astype(np.int64), chi=arr[:, 3], loggf=arr[:, 4],
                    group=arr[:, 5].astype(np.int64), elements=symbols)
