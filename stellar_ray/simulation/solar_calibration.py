"""The generator's line formation calibrated on the Sun.

:data:`SOLAR_LINES` are diagnostic lines with their equivalent widths measured in the solar
flux spectrum: weak and medium lines from Meléndez et al. (2014, ApJ 791, 14, Table 1: the
solar EWs of their 18 Sco analysis, HARPS spectra of the asteroid Vesta), strong lines from
the Rowland-table revision of Moore, Minnaert & Houtgast (1966, NBS Monograph 61).
:func:`calibrate` fits the few constants of :class:`~.physics.FormationConstants` to them
(least squares in ln EW at solar labels), and :func:`solar_table` compares each line.

    python -m stellar_ray.simulation.solar_calibration   # refit and print the table
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import least_squares

from ..spectra.units import air_to_vacuum
from .atomic_data import SYMBOLS
from .labels import typical
from .linelist import LineList, build_linelist
from .physics import CALIBRATED, FormationConstants, LineFormation

#: (species, air wavelength Å, solar EW mÅ, source): M14 = Meléndez et al. 2014, MMH =
#: Moore, Minnaert & Houtgast 1966. Left out: Mg I 5167.3 (its solar EW includes the
#: blended Fe I 5167.5) and Cr II 5305.9 (the Gaia-ESO log gf is 0.39 dex below the one
#: the solar EW was analysed with).
SOLAR_LINES: list[tuple[str, float, float, str]] = [
    ("Fe I", 5225.525, 72.1, "M14"), ("Fe I", 5247.050, 66.9, "M14"),
    ("Fe I", 5956.694, 52.8, "M14"), ("Fe I", 6151.618, 49.9, "M14"),
    ("Fe I", 6173.335, 68.7, "M14"), ("Fe I", 6252.555, 121.6, "M14"),
    ("Fe I", 6430.846, 114.0, "M14"), ("Fe I", 6065.482, 117.3, "M14"),
    ("Fe I", 5242.491, 86.9, "M14"), ("Fe I", 6027.050, 64.0, "M14"),
    ("Fe I", 5466.396, 79.4, "M14"), ("Fe I", 6024.058, 111.2, "M14"),
    ("Fe I", 5638.262, 77.6, "M14"), ("Fe I", 6093.644, 30.8, "M14"),
    ("Fe I", 5855.076, 22.9, "M14"), ("Fe I", 6082.711, 34.0, "M14"),
    ("Fe II", 5197.577, 80.7, "M14"), ("Fe II", 5234.625, 80.7, "M14"),
    ("Fe II", 5264.812, 45.8, "M14"), ("Fe II", 5325.553, 41.3, "M14"),
    ("Fe II", 5414.073, 26.7, "M14"), ("Fe II", 6247.557, 52.9, "M14"),
    ("Fe II", 6432.680, 42.4, "M14"), ("Fe II", 6456.383, 62.4, "M14"),
    ("Fe II", 6369.462, 18.7, "M14"),
    ("Mg I", 4730.040, 69.0, "M14"), ("Mg I", 5711.088, 105.6, "M14"),
    ("Mg I", 6319.236, 25.6, "M14"),
    ("Ca I", 5260.387, 34.0, "M14"), ("Ca I", 5581.965, 94.8, "M14"),
    ("Ca I", 6166.439, 70.2, "M14"), ("Ca I", 6169.042, 92.7, "M14"),
    ("Ca I", 6455.598, 56.8, "M14"), ("Ca I", 6499.650, 86.5, "M14"),
    ("Ca I", 5867.562, 24.0, "M14"),
    ("Na I", 6154.225, 36.9, "M14"), ("Na I", 6160.747, 54.3, "M14"),
    ("Si I", 5645.611, 36.1, "M14"), ("Si I", 5684.484, 62.0, "M14"),
    ("Si I", 5690.425, 49.3, "M14"), ("Si I", 6145.015, 39.1, "M14"),
    ("Si I", 6721.848, 44.8, "M14"), ("Si I", 5793.073, 44.0, "M14"),
    ("Ti I", 4758.120, 45.2, "M14"), ("Ti I", 5022.871, 72.6, "M14"),
    ("Ti I", 5866.452, 48.0, "M14"), ("Ti I", 6258.104, 52.3, "M14"),
    ("Ti II", 4779.985, 64.9, "M14"), ("Ti II", 5336.778, 72.2, "M14"),
    ("Ti II", 5418.767, 49.1, "M14"), ("Ti II", 4911.193, 52.7, "M14"),
    ("Cr I", 5247.566, 82.4, "M14"), ("Cr I", 5296.691, 93.6, "M14"),
    ("Cr I", 5300.744, 60.4, "M14"), ("Cr I", 5783.870, 44.9, "M14"),
    ("Cr II", 5237.328, 52.7, "M14"),
    ("Ni I", 6108.116, 65.3, "M14"), ("Ni I", 6176.811, 64.4, "M14"),
    ("Ni I", 6643.630, 93.9, "M14"), ("Ni I", 6767.772, 79.7, "M14"),
    ("Ni I", 5805.217, 42.6, "M14"),
    ("Mg I", 5172.684, 1259.0, "MMH"), ("Mg I", 5183.604, 1584.0, "MMH"),
    ("Na I", 5889.950, 752.0, "MMH"), ("Na I", 5895.924, 564.0, "MMH"),
    ("Ca II", 8498.023, 1462.0, "MMH"), ("Ca II", 8542.091, 3669.0, "MMH"),
    ("Ca II", 8662.141, 2600.0, "MMH"),
    ("H I", 6562.80, 4020.0, "MMH"), ("H I", 4861.33, 3680.0, "MMH"),
]
#: A hotter anchor for hydrogen, whose single-layer strength otherwise runs away in A stars:
#: Hβ in an A0 V star such as Vega (Teff 9550 K, log g 3.95), about 16 Å (a rounded value;
#: Balmer lines of A0–A2 dwarfs have equivalent widths of 15–20 Å).
A_STAR_LINES: list[tuple[str, float, float, str]] = [("H I", 4861.33, 16000.0, "A0 V")]
A_STAR_LABELS = {"teff": 9550.0, "logg": 3.95, "fe_h": 0.0, "vmic": 2.0}
#: Largest |EW_model / EW_sun − 1| the calibration must reach for every line.
TOLERANCE = 0.25
#: The solar labels the lines are computed at (vmic of 1D analyses of the Sun).
SOLAR_LABELS = {"teff": 5772.0, "logg": 4.438, "fe_h": 0.0, "vmic": 1.0}


@dataclass(frozen=True)
class SolarLine:
    species: str
    wave_air: float
    ew_sun_ma: float
    source: str
    index: int  # into the line list handed to :func:`locate`


def locate(lines: LineList, table=SOLAR_LINES, tolerance_a: float = 0.03) -> list[SolarLine]:
    """Each table line's index in ``lines``: the line of the same species within
    ``tolerance_a`` of its vacuum wavelength that is strongest in the Sun (largest
    log gf − θχ at θ = 1)."""
    out = []
    for species, air, ew, source in table:
        symbol, stage = species.split()
        z, ion = SYMBOLS.index(symbol) + 1, {"I": 1, "II": 2}[stage]
        vac = float(air_to_vacuum(np.array([air]))[0])
        near = np.flatnonzero((lines.z == z) & (lines.ion == ion)
                              & (np.abs(lines.wave - vac) < tolerance_a))
        if near.size == 0:
            raise LookupError(f"{species} {air} Å is not in the line list")
        strength = lines.loggf[near] - lines.chi[near]
        out.append(SolarLine(species, air, ew, source, int(near[np.argmax(strength)])))
    return out


def _formation(constants: FormationConstants, table=SOLAR_LINES
               ) -> tuple[LineFormation, list[SolarLine]]:
    lines = build_linelist(4500.0, 8800.0)
    formation = LineFormation(lines, constants, min_eta=0.0)
    return formation, locate(formation.lines, table)


def model_widths(constants: FormationConstants = CALIBRATED,
                 formation: LineFormation | None = None,
                 solar: list[SolarLine] | None = None,
                 labels: dict[str, float] = SOLAR_LABELS) -> np.ndarray:
    """Equivalent widths (mÅ) of :data:`SOLAR_LINES` (or ``solar``), each alone, at
    ``labels`` (default: the Sun's)."""
    if formation is None or solar is None:
        formation, solar = _formation(constants)
    with torch.no_grad():
        ew = formation.equivalent_widths(typical(1, **labels),
                                         np.array([s.index for s in solar]))
    return 1e3 * ew[0].numpy()


FREE = ("line_strength", "layer_temperature", "solar_pressure", "beta_scale", "damping_scale",
        "hydrogen_strength", "stark_scale",
        "hydrogen_exponent")


def calibrate(start: FormationConstants = CALIBRATED) -> FormationConstants:
    """The constants in :data:`FREE` that minimise Σ ln²(EW_model / EW_observed) over
    :data:`SOLAR_LINES` and :data:`A_STAR_LINES`."""
    formation, solar = _formation(start)
    hot = locate(formation.lines, A_STAR_LINES)
    observed = np.log([s.ew_sun_ma for s in [*solar, *hot]])
    x0 = np.log([getattr(start, k) for k in FREE])

    def residuals(x: np.ndarray) -> np.ndarray:
        formation.constants = dataclasses.replace(start, **dict(zip(FREE, np.exp(x))))
        formation.line_strength = formation.constants.line_strength
        formation.hydrogen_strength = formation.constants.hydrogen_strength
        model = np.concatenate([
            model_widths(formation=formation, solar=solar),
            model_widths(formation=formation, solar=hot, labels=A_STAR_LABELS)])
        return np.log(np.maximum(model, 1e-6)) - observed

    fit = least_squares(residuals, x0, x_scale=0.5, diff_step=1e-3)
    return dataclasses.replace(start, **dict(zip(FREE, np.exp(fit.x))))


def solar_table(constants: FormationConstants = CALIBRATED) -> list[tuple[SolarLine, float]]:
    """(line, model EW mÅ) for every calibration line."""
    formation, solar = _formation(constants)
    return list(zip(solar, model_widths(formation=formation, solar=solar)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table-only", action="store_true", help="no refit")
    args = parser.parse_args()
    constants = CALIBRATED if args.table_only else calibrate()
    print(constants)
    print("| line | λ air (Å) | generator EW (mÅ) | solar EW (mÅ) | ratio | source |")
    print("|---|---|---|---|---|---|")
    for line, ew in solar_table(constants):
        print(f"| {line.species} | {line.wave_air:.2f} | {ew:.0f} | {line.ew_sun_ma:.0f} | "
              f"{ew / line.ew_sun_ma:.2f} | {line.source} |")


if __name__ == "__main__":
    main()
