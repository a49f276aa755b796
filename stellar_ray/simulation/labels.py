"""The generator's stellar labels: names, units (the shared defaults of
:mod:`stellar_ray.quantities`) and the ranges the model covers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..quantities import LABEL_UNITS


@dataclass(frozen=True)
class LabelRange:
    """One label: name, unit, the range the model covers, and a typical (solar) value."""

    name: str
    unit: str
    low: float
    high: float
    typical: float
    description: str


#: Order of the label axis of every (B, K) label tensor the generator takes.
LABELS: tuple[LabelRange, ...] = tuple(
    LabelRange(name, LABEL_UNITS[name], low, high, typical, description)
    for name, low, high, typical, description in (
        ("teff", 3000.0, 20000.0, 5777.0, "effective temperature"),
        ("logg", 0.0, 5.5, 4.44, "surface gravity, log10(g / cm s^-2)"),
        ("fe_h", -4.0, 0.5, 0.0, "[Fe/H]"),
        ("alpha_fe", -0.4, 0.8, 0.0, "[alpha/Fe] for O, Si, Ti"),
        ("ca_fe", -0.6, 1.0, 0.0, "[Ca/Fe]"),
        ("mg_fe", -0.6, 1.0, 0.0, "[Mg/Fe]"),
        ("li_fe", -1.0, 4.0, 0.0, "[Li/Fe] relative to the solar photosphere"),
        ("vmic", 0.3, 5.0, 1.0, "microturbulence"),
        ("vsini", 0.0, 300.0, 2.0, "projected rotation velocity"),
        ("rv", -600.0, 600.0, 0.0, "radial velocity"),
    ))
LABEL_NAMES: tuple[str, ...] = tuple(lab.name for lab in LABELS)
INDEX = {name: i for i, name in enumerate(LABEL_NAMES)}
#: Labels stored in a dataset's label columns (rv goes to the ``rv`` metadata column).
DATASET_LABELS = tuple(n for n in LABEL_NAMES if n != "rv")


def typical(batch: int = 1, **values: float) -> torch.Tensor:
    """(batch, K) float64 labels at their typical values, with ``values`` overriding."""
    out = torch.tensor([lab.typical for lab in LABELS], dtype=torch.float64).repeat(batch, 1)
    for name, value in values.items():
        out[:, INDEX[name]] = value
    return out


def check_ranges(labels: np.ndarray | torch.Tensor, where: str = "labels") -> None:
    """Raise ValueError naming the first label outside the model's range."""
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels
    arr = np.atleast_2d(arr)
    for i, lab in enumerate(LABELS):
        col = arr[:, i]
        bad = np.flatnonzero(~((col >= lab.low) & (col <= lab.high)))
        if bad.size:
            raise ValueError(f"{where}: '{lab.name}' = {col[bad[0]]} (row {bad[0]}) is outside "
                             f"the generator's range [{lab.low}, {lab.high}] {lab.unit}")


def range_of(name: str) -> LabelRange:
    if name not in INDEX:
        raise ValueError(f"unknown label '{name}'; the generator knows {list(LABEL_NAMES)}")
    return LABELS[INDEX[name]]
