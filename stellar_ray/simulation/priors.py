"""Where the labels of a simulated survey come from: uniform boxes, a Galactic
thin-disc / thick-disc / halo mixture, or rectilinear grids; and S/N distributions.

Every sampler takes a numpy Generator and returns (N, K) labels in LABELS order, inside
the generator's ranges.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..quantities import snr_window
from .labels import INDEX, LABEL_NAMES, LABELS, range_of


def _check_range(name: str, lo: float, hi: float, where: str) -> None:
    r = range_of(name)
    if not (r.low <= lo <= hi <= r.high):
        raise ValueError(f"{where}.{name}: [{lo}, {hi}] must lie within the generator's range "
                         f"[{r.low}, {r.high}] {r.unit} with low <= high")


class UniformPrior(BaseModel):
    """Independent uniform draws: ``ranges`` override the generator's full ranges;
    ``fixed`` pins labels to one value."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["uniform"] = "uniform"
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    fixed: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> UniformPrior:
        for name, (lo, hi) in self.ranges.items():
            _check_range(name, lo, hi, "prior.ranges")
        for name, value in self.fixed.items():
            _check_range(name, value, value, "prior.fixed")
        return self

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        out = np.empty((n, len(LABELS)))
        for i, lab in enumerate(LABELS):
            lo, hi = self.ranges.get(lab.name, (lab.low, lab.high))
            out[:, i] = rng.uniform(lo, hi, n)
            if lab.name in self.fixed:
                out[:, i] = self.fixed[lab.name]
        return out


class GalacticPrior(BaseModel):
    """A rough Milky Way mixture: populations (thin disc, thick disc, halo) set [Fe/H],
    [α/Fe] and radial-velocity spread; evolutionary stages (dwarfs, subgiants, giants, hot
    stars) set Teff, log g, microturbulence, rotation and lithium."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["galactic"] = "galactic"
    populations: dict[Literal["thin", "thick", "halo"], float] = Field(
        default_factory=lambda: {"thin": 0.7, "thick": 0.2, "halo": 0.1})
    stages: dict[Literal["dwarf", "subgiant", "giant", "hot"], float] = Field(
        default_factory=lambda: {"dwarf": 0.6, "subgiant": 0.1, "giant": 0.25, "hot": 0.05})

    @field_validator("populations", "stages")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return v

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        pops = list(self.populations)
        p = np.array([self.populations[k] for k in pops])
        pop = rng.choice(pops, n, p=p / p.sum())
        stages = list(self.stages)
        q = np.array([self.stages[k] for k in stages])
        stage = rng.choice(stages, n, p=q / q.sum())
        out = np.empty((n, len(LABELS)))
        col = {name: out[:, INDEX[name]] for name in LABEL_NAMES}
        feh = {"thin": (-0.05, 0.2), "thick": (-0.55, 0.25), "halo": (-1.5, 0.5)}
        alpha = {"thin": (0.02, 0.04), "thick": (0.28, 0.05), "halo": (0.35, 0.06)}
        rv_sd = {"thin": 30.0, "thick": 50.0, "halo": 120.0}
        for k in pops:
            s = pop == k
            col["fe_h"][s] = rng.normal(*feh[k], s.sum())
            col["alpha_fe"][s] = rng.normal(*alpha[k], s.sum())
            col["rv"][s] = rng.normal(0.0, rv_sd[k], s.sum())
        col["ca_fe"][:] = col["alpha_fe"] + rng.normal(0, 0.05, n)
        col["mg_fe"][:] = col["alpha_fe"] + rng.normal(0, 0.05, n)
        for k in stages:
            s = stage == k
            m = int(s.sum())
            if k == "dwarf":
                t = 10 ** rng.uniform(np.log10(3300), np.log10(7500), m)
                g = 4.9 - 0.25 * (t - 3300) / 1000 + rng.normal(0, 0.08, m)
                vmic, vsini = rng.normal(1.0, 0.2, m), np.abs(rng.normal(0, 4, m))
                a_li = np.where(t > 5800, rng.normal(2.3, 0.3, m), rng.normal(1.0, 0.5, m))
            elif k == "subgiant":
                t, g = rng.uniform(4800, 6500, m), rng.uniform(3.4, 4.0, m)
                vmic, vsini = rng.normal(1.2, 0.2, m), np.abs(rng.normal(0, 4, m))
                a_li = rng.normal(1.5, 0.5, m)
            elif k == "giant":
                t = rng.uniform(3700, 5300, m)
                g = 0.8 + 2.0 * (t - 3700) / 1600 + rng.normal(0, 0.2, m)
                vmic, vsini = rng.normal(1.6, 0.3, m), np.abs(rng.normal(0, 3, m))
                a_li = rng.normal(0.5, 0.4, m)
            else:
                t = 10 ** rng.uniform(np.log10(7500), np.log10(20000), m)
                g = rng.uniform(3.5, 4.5, m)
                vmic, vsini = rng.normal(2.0, 0.3, m), rng.uniform(20, 250, m)
                a_li = rng.normal(2.0, 0.5, m)
            col["teff"][s], col["logg"][s], col["vmic"][s], col["vsini"][s] = t, g, vmic, vsini
            col["li_fe"][s] = a_li - 1.05 - col["fe_h"][s]
        for i, lab in enumerate(LABELS):
            out[:, i] = np.clip(out[:, i], lab.low, lab.high)
        return out


class GridPrior(BaseModel):
    """A rectilinear grid: every combination of the ``axes`` values (PHOENIX-like); other
    labels at ``fixed`` values or their typical ones. Ignores the requested count."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["grid"] = "grid"
    axes: dict[str, list[float]] = Field(min_length=1)
    fixed: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> GridPrior:
        for name, values in self.axes.items():
            if not values:
                raise ValueError(f"prior.axes.{name}: needs at least one value")
            _check_range(name, min(values), max(values), "prior.axes")
        for name, value in self.fixed.items():
            _check_range(name, value, value, "prior.fixed")
        return self

    @property
    def size(self) -> int:
        return int(np.prod([len(v) for v in self.axes.values()]))

    def sample(self, n: int | None = None, rng: np.random.Generator | None = None
               ) -> np.ndarray:
        base = np.array([self.fixed.get(lab.name, lab.typical) for lab in LABELS])
        names = list(self.axes)
        rows = []
        for combo in itertools.product(*(sorted(self.axes[k]) for k in names)):
            row = base.copy()
            for name, value in zip(names, combo):
                row[INDEX[name]] = value
            rows.append(row)
        return np.array(rows)


Prior = Annotated[UniformPrior | GalacticPrior | GridPrior, Field(discriminator="kind")]


class SNRSpec(BaseModel):
    """S/N: ``loguniform`` in [low, high], ``fixed`` at ``value``, ``choice`` among
    ``values``, or ``magnitude``: magnitudes uniform in [low, high] with S/N = ref_snr at
    ref_mag, scaling as photon noise (10^(−0.2 Δm)). ``per``: the figures are per pixel
    (4MOST's definition, the default) or per Å (as paper 004 quotes them); the dataset's
    ``snr`` column is always per pixel."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["loguniform", "fixed", "choice", "magnitude"] = "loguniform"
    low: float = 10.0
    high: float = 250.0
    value: float = 50.0
    values: list[float] = Field(default_factory=lambda: [10, 20, 50, 80, 100, 130, 180, 250])
    ref_mag: float = 15.0
    ref_snr: float = 100.0
    per: Literal["pixel", "angstrom"] = "pixel"

    @model_validator(mode="after")
    def _positive(self) -> SNRSpec:
        checks = {"loguniform": [("low", self.low), ("high", self.high)],
                  "fixed": [("value", self.value)], "choice": [("values", min(self.values))],
                  "magnitude": [("ref_snr", self.ref_snr)]}[self.kind]
        for name, v in checks:
            if not v > 0:
                raise ValueError(f"snr.{name}: S/N must be > 0 (got {v})")
        if self.kind in ("loguniform", "magnitude") and self.high < self.low:
            raise ValueError(f"snr: high ({self.high}) must be >= low ({self.low})")
        return self

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, self.value)
        if self.kind == "choice":
            return rng.choice(np.asarray(self.values, dtype=float), n)
        if self.kind == "magnitude":
            mag = rng.uniform(self.low, self.high, n)
            return self.ref_snr * 10 ** (-0.2 * (mag - self.ref_mag))
        return np.exp(rng.uniform(np.log(self.low), np.log(self.high), n))

    def per_pixel(self, snr: np.ndarray, wave_a: np.ndarray) -> np.ndarray:
        """Drawn ``snr`` (n,) as S/N per pixel on the grid ``wave_a`` (L,) Å: per-Å figures
        times √(pixel width in Å) at the median over the S/N window."""
        if self.per == "pixel":
            return np.asarray(snr, dtype=float)
        width = float(np.median(np.gradient(np.asarray(wave_a))[snr_window(wave_a)]))
        return np.asarray(snr, dtype=float) * np.sqrt(width)
