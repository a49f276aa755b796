"""Named wavelength grids (4MOST defaults from ``shared/reference/4most.md``) and the
``--grid`` specification parser."""

from __future__ import annotations

from pathlib import Path

import yaml

from .grid import ArmGrid, Medium, WavelengthGrid

#: 4MOST LRS: the arms joined onto 3700–9500 Å at 0.25 Å per pixel (23,201 pixels).
LRS_RANGE_A = (3700.0, 9500.0)
LRS_STEP_A = 0.25

#: 4MOST HRS arms (Å); sampling is not published: 2.6 pixels per resolution element at
#: R = 20,000 by default.
HRS_ARMS_A = {"blue": (3926.0, 4355.0), "green": (5160.0, 5730.0), "red": (6100.0, 6790.0)}
HRS_RESOLVING_POWER = 20_000.0
HRS_PIXELS_PER_RESEL = 2.6


def lrs_grid(medium: Medium = "vacuum") -> WavelengthGrid:
    """4MOST LRS joined grid: 3700–9500 Å, 0.25 Å pixels, 23,201 pixels."""
    lo, hi = LRS_RANGE_A
    return WavelengthGrid(arms=[ArmGrid.linear_range("lrs", lo, hi, LRS_STEP_A)], medium=medium)


def hrs_grid(
    medium: Medium = "vacuum",
    resolving_power: float = HRS_RESOLVING_POWER,
    pixels_per_resel: float = HRS_PIXELS_PER_RESEL,
) -> WavelengthGrid:
    """4MOST HRS blue, green and red arms, log-linear at constant resolving power."""
    arms = [
        ArmGrid.constant_resolution(name, lo, hi, resolving_power, pixels_per_resel)
        for name, (lo, hi) in HRS_ARMS_A.items()
    ]
    return WavelengthGrid(arms=arms, medium=medium)


PRESETS = {"lrs": lrs_grid, "hrs": hrs_grid}


def parse_grid(spec: str, medium: Medium = "vacuum") -> WavelengthGrid:
    """A grid from a ``--grid`` value.

    ``lrs`` or ``hrs`` (4MOST presets); ``START:STOP:STEP`` (linear, Å, STOP inclusive);
    or the path of a YAML file holding a :class:`WavelengthGrid` (``arms:`` and ``medium:``).
    """
    if spec in PRESETS:
        return PRESETS[spec](medium=medium)
    if spec.count(":") == 2 and not Path(spec).exists():
        try:
            lo, hi, step = (float(x) for x in spec.split(":"))
        except ValueError as err:
            raise ValueError(f"--grid '{spec}': START:STOP:STEP must be numbers (Å)") from err
        if not (0 < lo < hi and step > 0):
            raise ValueError(f"--grid '{spec}': need 0 < START < STOP and STEP > 0 (Å)")
        return WavelengthGrid(arms=[ArmGrid.linear_range("arm", lo, hi, step)], medium=medium)
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return WavelengthGrid.model_validate(yaml.safe_load(path.read_text()))
    raise ValueError(
        f"--grid '{spec}': expected one of {sorted(PRESETS)}, START:STOP:STEP in Å, "
        "or a YAML file with 'arms' and 'medium'"
    )
