"""The generator's line list: real atomic lines where a published list covers the range, the
hydrogen series, and the strongest lines beyond it.

* 4200–9200 Å (air): every line of the Gaia-ESO list (:mod:`.atomic_data`), with its
  laboratory wavelength, excitation energy, log gf and damping constants.
* Hydrogen and helium: the Balmer and Paschen series and the He I lines of hot stars (not in
  that list), from standard tables.
* Outside 4200–9200 Å (the blue end of the LRS and the HRS blue arm, the LRS red end): the
  strong lines below (Ca II H & K, strong Fe I and Ca I), with rounded literature data, plus a
  seeded forest of weaker lines with realistic distributions of excitation energy and log gf
  but random wavelengths (no public list installable here covers those ranges).

Wavelengths are converted from air to vacuum. Which lines are strong enough to keep is
decided by the line formation (:class:`~.physics.LineFormation`), which knows the opacities.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
import torch

from ..spectra.units import air_to_vacuum
from .atomic_data import COVERAGE_AIR_A, SOLAR_A, SYMBOLS, load_atomic_data

#: The label that sets [X/Fe] of an element beyond [Fe/H] (others follow [Fe/H] alone).
ABUNDANCE_LABEL = {"Li": "li_fe", "Mg": "mg_fe", "Ca": "ca_fe", "O": "alpha_fe",
                   "Si": "alpha_fe", "Ti": "alpha_fe"}

#: Van der Waals factor given to the lines of the tables below (Unsöld's γ₆ times this; the
#: usual enhancement for lines without quantum-mechanical cross-sections).
UNSOLD_FACTOR = 2.5

# (element, ion stage 1 = neutral, air wavelength Å, excitation eV, log gf)
_HYDROGEN_AIR = [
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
]
# Helium (not in the Gaia-ESO list): the singlet and triplet lines of hot stars, NIST's
# multiplet values rounded.
_HELIUM_AIR = [
    ("He", 1, 4026.19, 20.964, -0.37), ("He", 1, 4387.93, 21.218, -0.88),
    ("He", 1, 4471.48, 20.964, 0.05), ("He", 1, 4713.15, 20.964, -1.23),
    ("He", 1, 4921.93, 21.218, -0.44), ("He", 1, 5015.68, 20.616, -0.82),
    ("He", 1, 5875.62, 20.964, 0.41), ("He", 1, 6678.15, 21.218, 0.33),
    ("He", 1, 7065.19, 20.964, -0.46),
]
# Strong lines outside the Gaia-ESO range.
_STRONG_OUTSIDE_AIR = [
    ("Ca", 2, 3933.66, 0.000, 0.135), ("Ca", 2, 3968.47, 0.000, -0.180),
    ("Al", 1, 3944.01, 0.000, -0.640),
    ("Al", 1, 3961.52, 0.014, -0.340), ("Sr", 2, 4077.71, 0.000, 0.150),
    ("Fe", 1, 4045.81, 1.485, 0.280), ("Fe", 1, 4063.59, 1.558, 0.062),
    ("Fe", 1, 4071.74, 1.608, -0.022), ("Fe", 1, 3820.43, 0.859, 0.119),
    ("Fe", 1, 3859.91, 0.000, -0.710), ("Fe", 1, 3878.57, 0.087, -1.380),
    ("Mn", 1, 4030.75, 0.000, -0.497), ("Mn", 1, 4033.06, 0.000, -0.647),
]

#: Forest outside the Gaia-ESO range: (element, ion stage, lines per 1000 Å).
_FOREST = [("Fe", 1, 60), ("Fe", 2, 8), ("Ti", 1, 12), ("Ti", 2, 6), ("Cr", 1, 10),
           ("Ni", 1, 10), ("Ca", 1, 4), ("Mg", 1, 2), ("Si", 1, 5), ("Na", 1, 1),
           ("O", 1, 1), ("C", 1, 3)]
#: Width of the blocks the forest is drawn in, Å: each block has its own random stream, so a
#: star's forest at a wavelength does not depend on the range an instrument asks for.
FOREST_BLOCK_A = 50.0


@dataclass(frozen=True)
class LineList:
    """Lines as arrays of shape (N,): vacuum wavelength (Å), atomic number, ion stage (1 or
    2), lower-level energy (eV), log gf, radiative damping (s⁻¹, 0: classical), van der
    Waals parameter (see :class:`~.atomic_data.RawLines`)."""

    wave: np.ndarray
    z: np.ndarray
    ion: np.ndarray
    chi: np.ndarray
    loggf: np.ndarray
    gamma_rad: np.ndarray
    fdamp: np.ndarray

    def __len__(self) -> int:
        return int(self.wave.size)

    def select(self, keep: np.ndarray) -> LineList:
        return LineList(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    @property
    def is_hydrogen(self) -> np.ndarray:
        return self.z == 1

    def tensors(self, device: torch.device | str = "cpu", dtype=torch.float64
                ) -> dict[str, torch.Tensor]:
        return {
            "wave": torch.as_tensor(self.wave, dtype=dtype, device=device),
            "z": torch.as_tensor(self.z, dtype=torch.long, device=device),
            "ion": torch.as_tensor(self.ion, dtype=torch.long, device=device),
            "chi": torch.as_tensor(self.chi, dtype=dtype, device=device),
            "loggf": torch.as_tensor(self.loggf, dtype=dtype, device=device),
            "gamma_rad": torch.as_tensor(self.gamma_rad, dtype=dtype, device=device),
            "fdamp": torch.as_tensor(self.fdamp, dtype=dtype, device=device),
        }


def _table(rows: list[tuple[str, int, float, float, float]], air: bool = True) -> LineList:
    """Lines given as (element, ion stage, wavelength Å, excitation eV, log gf)."""
    wave = np.array([r[2] for r in rows], dtype=np.float64)
    n = len(rows)
    return LineList(wave=air_to_vacuum(wave) if air else wave,
                    z=np.array([SYMBOLS.index(r[0]) + 1 for r in rows], dtype=np.int64),
                    ion=np.array([r[1] for r in rows], dtype=np.int64),
                    chi=np.array([r[3] for r in rows], dtype=np.float64),
                    loggf=np.array([r[4] for r in rows], dtype=np.float64), gamma_rad=np.zeros(n),
                    fdamp=np.full(n, UNSOLD_FACTOR))


def _forest(lo: float, hi: float, seed: int) -> LineList:
    """Seeded random lines in the blocks of [lo, hi] that lie outside the real list."""
    rows = []
    cover_lo, cover_hi = (float(w) for w in air_to_vacuum(np.array(COVERAGE_AIR_A)))
    for block in range(int(np.floor(lo / FOREST_BLOCK_A)), int(np.ceil(hi / FOREST_BLOCK_A))):
        b_lo, b_hi = block * FOREST_BLOCK_A, (block + 1) * FOREST_BLOCK_A
        if b_lo >= cover_lo and b_hi <= cover_hi:
            continue
        rng = np.random.default_rng([seed, block])
        for el, ion, per_1000 in _FOREST:
            n = rng.poisson(per_1000 * FOREST_BLOCK_A / 1000.0)
            wave = np.exp(rng.uniform(np.log(b_lo), np.log(b_hi), n))
            chi = rng.uniform(0.0, 5.0 if ion == 1 else 6.0, n)
            loggf = np.clip(rng.normal(-1.8, 0.9, n), -5.0, 0.5)
            rows += [(el, ion, w, c, g) for w, c, g in zip(wave, chi, loggf)
                     if not cover_lo <= w <= cover_hi]
    return _table(rows, air=False)


def _concat(parts: list[LineList]) -> LineList:
    return LineList(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                       for f in fields(LineList)})


@lru_cache(maxsize=8)
def build_linelist(lo: float = 3500.0, hi: float = 10000.0, seed: int = 20260101) -> LineList:
    """Every candidate line with a vacuum wavelength in [lo, hi] Å, sorted by wavelength.
    The forest in any interval is the same for every [lo, hi] that contains it."""
    raw, _ = load_atomic_data()
    known = np.array([SYMBOLS[z - 1] in SOLAR_A for z in raw.z])
    real = LineList(wave=air_to_vacuum(raw.wave_air), z=raw.z, ion=raw.ion, chi=raw.chi,
                    loggf=raw.loggf, gamma_rad=raw.gamma_rad, fdamp=raw.fdamp).select(known)
    cover_lo, cover_hi = COVERAGE_AIR_A
    outside = [r for r in _STRONG_OUTSIDE_AIR if not cover_lo <= r[2] <= cover_hi]
    lines = _concat([real, _table(_HYDROGEN_AIR), _table(_HELIUM_AIR), _table(outside),
                     _forest(lo, hi, seed)])
    keep = (lines.wave >= lo) & (lines.wave <= hi)
    lines = lines.select(keep)
    return lines.select(np.argsort(lines.wave, kind="stable"))
