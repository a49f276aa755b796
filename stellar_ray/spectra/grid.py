"""Wavelength grids: one or more spectrograph arms, each a linear, log-linear or tabulated
sequence of pixel centres in Ångström.

The pixel axis of every row in a dataset is the concatenation of its arms, which must be
strictly increasing overall.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

Medium = Literal["air", "vacuum"]


class ArmGrid(BaseModel):
    """One arm's pixel centres (Å).

    ``kind='linear'``: ``start + step * i``; ``kind='log10'``: ``10**(log10(start) + step * i)``
    (``step`` in dex); ``kind='table'``: the explicit ``values``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["linear", "log10", "table"]
    start: float | None = Field(default=None, gt=0, description="first pixel centre, Å")
    step: float | None = Field(default=None, gt=0, description="Å (linear) or dex (log10)")
    npix: int | None = Field(default=None, gt=0)
    values: list[float] | None = None

    @model_validator(mode="after")
    def _check(self) -> ArmGrid:
        if self.kind == "table":
            if not self.values:
                raise ValueError(f"arm '{self.name}': kind 'table' needs 'values'")
            v = np.asarray(self.values)
            bad = np.flatnonzero(np.diff(v) <= 0)
            if bad.size:
                raise ValueError(
                    f"arm '{self.name}': wavelengths not strictly increasing at index "
                    f"{bad[0] + 1} ({v[bad[0]]} then {v[bad[0] + 1]})"
                )
            if v[0] <= 0:
                raise ValueError(f"arm '{self.name}': wavelengths must be positive")
        elif self.start is None or self.step is None or self.npix is None:
            raise ValueError(f"arm '{self.name}': kind '{self.kind}' needs start, step and npix")
        return self

    def wavelength(self) -> np.ndarray:
        """Pixel centres, Å, float64, shape (npix,)."""
        if self.kind == "table":
            return np.asarray(self.values, dtype=np.float64)
        i = np.arange(self.npix, dtype=np.float64)
        if self.kind == "linear":
            return self.start + self.step * i
        return 10.0 ** (np.log10(self.start) + self.step * i)

    @classmethod
    def linear_range(cls, name: str, lo: float, hi: float, step: float) -> ArmGrid:
        """A linear arm from ``lo`` to ``hi`` inclusive (Å) at ``step`` Å."""
        npix = int(round((hi - lo) / step)) + 1
        return cls(name=name, kind="linear", start=lo, step=step, npix=npix)

    @classmethod
    def constant_resolution(
        cls, name: str, lo: float, hi: float, resolving_power: float, pixels_per_resel: float
    ) -> ArmGrid:
        """A log-linear arm covering [lo, hi] Å sampled with ``pixels_per_resel`` pixels per
        resolution element λ/R."""
        step = float(np.log10(1.0 + 1.0 / (resolving_power * pixels_per_resel)))
        npix = int(np.floor(np.log10(hi / lo) / step)) + 1
        return cls(name=name, kind="log10", start=lo, step=step, npix=npix)


class WavelengthGrid(BaseModel):
    """The full pixel axis: arms in increasing wavelength, and the medium (air or vacuum)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arms: list[ArmGrid] = Field(min_length=1)
    medium: Medium = "vacuum"

    @model_validator(mode="after")
    def _check_order(self) -> WavelengthGrid:
        for a, b in zip(self.arms, self.arms[1:]):
            if b.wavelength()[0] <= a.wavelength()[-1]:
                raise ValueError(
                    f"arm '{b.name}' starts at {b.wavelength()[0]:.3f} Å, not after arm "
                    f"'{a.name}' ends ({a.wavelength()[-1]:.3f} Å); arms must not overlap"
                )
        return self

    def __eq__(self, other: object) -> bool:
        """Same arms and medium (the cached wavelength array is not compared)."""
        if not isinstance(other, WavelengthGrid):
            return NotImplemented
        return self.medium == other.medium and self.arms == other.arms

    def __hash__(self) -> int:
        return hash(self.model_dump_json())

    @cached_property
    def _wavelength(self) -> np.ndarray:
        w = np.concatenate([a.wavelength() for a in self.arms])
        w.setflags(write=False)
        return w

    def wavelength(self) -> np.ndarray:
        """Pixel centres of all arms, Å, float64, shape (L,), read-only."""
        return self._wavelength

    @property
    def npix(self) -> int:
        return int(self._wavelength.size)

    def arm_npix(self) -> list[int]:
        """Pixels of each arm, in order."""
        return [a.wavelength().size for a in self.arms]

    def arm_slices(self) -> dict[str, slice]:
        """Pixel ranges of each arm in the concatenated axis."""
        out, i = {}, 0
        for a in self.arms:
            n = a.wavelength().size
            out[a.name] = slice(i, i + n)
            i += n
        return out

    @classmethod
    def from_wavelength(cls, wave: np.ndarray, medium: Medium, name: str = "arm") -> WavelengthGrid:
        """A one-arm grid for an arbitrary increasing wavelength array (Å); recognises
        linear and log-linear spacing so that the manifest stays small."""
        wave = np.asarray(wave, dtype=np.float64)
        if wave.size >= 3:
            d = np.diff(wave)
            if np.allclose(d, d.mean(), rtol=1e-9, atol=0):
                arm = ArmGrid(name=name, kind="linear", start=wave[0], step=d.mean(),
                              npix=wave.size)
                if np.allclose(arm.wavelength(), wave, rtol=1e-11, atol=0):
                    return cls(arms=[arm], medium=medium)
            dl = np.diff(np.log10(wave))
            if np.allclose(dl, dl.mean(), rtol=1e-9, atol=0):
                arm = ArmGrid(name=name, kind="log10", start=wave[0], step=dl.mean(),
                              npix=wave.size)
                if np.allclose(arm.wavelength(), wave, rtol=1e-11, atol=0):
                    return cls(arms=[arm], medium=medium)
        return cls(arms=[ArmGrid(name=name, kind="table", values=wave.tolist())], medium=medium)
