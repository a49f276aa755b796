"""The normalisation: everything that maps a dataset's labels and flux into a model's space
and back. Fitted on the training set, stored in the artifact."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ..errors import SpectraError
from ..spectra.continuum import ContinuumConfig, divide_by_continuum
from .preprocess import LabelScaler, fill_unusable

Transform = Literal["log10", "ln"]
_FORWARD = {"log10": np.log10, "ln": np.log}
_INVERSE = {"log10": lambda t: 10.0**t, "ln": np.exp}
_SLOPE = {"log10": np.log(10.0), "ln": 1.0}  # d(label)/d(t) = slope · label


class Normalisation(BaseModel):
    """labels: names (K); transforms: a label's log10 or ln, applied before z-scoring
    (training works on the transformed label, every output is back in the label's units);
    mean, std: the z-scoring (K) of the (transformed) labels; low, high: the training domain
    (K), in the labels' units; flux_scale: emulator targets are flux / flux_scale (flux in
    the dataset's unit); log1p: SM-Net's (scale, maximum) of its log1p flux scaling."""

    model_config = ConfigDict(extra="forbid")

    labels: list[str]
    transforms: dict[str, Transform] = Field(default_factory=dict)
    mean: list[float]
    std: list[float]
    low: list[float]
    high: list[float]
    flux_scale: float = 1.0
    log1p: tuple[float, float] | None = None
    continuum: ContinuumConfig | None = Field(default=None, description="flux and σ are "
                                              "divided by their pseudo-continuum before "
                                              "the model, in training and inference")
    arm_npix: list[int] | None = Field(default=None, description="pixels per arm of the "
                                       "grid (the continuum is fitted per arm)")
    fill_unusable: bool = Field(default=False, description="unusable pixels (σ not "
                                "finite) get the interpolation of their usable neighbours "
                                "instead of 0 before the model (artifacts from before "
                                "this field hold 0)")

    @classmethod
    def of_labels(cls, labels: np.ndarray, names: list[str],
                  transforms: dict[str, Transform] | None = None) -> Normalisation:
        """Statistics of training labels (N, K), NaN (unknown) values ignored; a
        transformed label must be positive wherever it is known."""
        transforms = dict(transforms or {})
        labels = np.asarray(labels, dtype=np.float64)
        for name in transforms:
            values = labels[:, names.index(name)]
            bad = np.flatnonzero(values <= 0)
            if bad.size:
                raise SpectraError(f"transform {transforms[name]} needs positive values; "
                                   f"training row {int(bad[0])} has {values[bad[0]]:g}",
                                   field=name)
        norm = cls(labels=list(names), transforms=transforms, mean=[0.0] * len(names),
                   std=[1.0] * len(names), low=np.nanmin(labels, axis=0).tolist(),
                   high=np.nanmax(labels, axis=0).tolist())
        scaler = LabelScaler.fit(torch.as_tensor(norm.transformed(labels)))
        norm.mean, norm.std = scaler.mean.tolist(), scaler.std.tolist()
        return norm

    def transformed(self, labels: np.ndarray) -> np.ndarray:
        """(..., K) labels in their units -> the space they are z-scored in, float64."""
        out = np.array(labels, dtype=np.float64)
        for name, kind in self.transforms.items():
            k = self.labels.index(name)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[..., k] = _FORWARD[kind](out[..., k])
        return out

    def untransformed(self, values: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`transformed`, float64."""
        out = np.array(values, dtype=np.float64)
        for name, kind in self.transforms.items():
            k = self.labels.index(name)
            out[..., k] = _INVERSE[kind](out[..., k])
        return out

    def model_input(self, wave: np.ndarray, flux: torch.Tensor, sigma: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(flux, σ) (B, L) as the model takes them, the same in training and inference:
        divided by their pseudo-continuum when the normalisation has one, and unusable
        pixels (σ ∞, flux 0) filled from their neighbours when it says so (σ stays ∞)."""
        if self.continuum is not None:
            x, s = divide_by_continuum(wave, flux.detach().cpu().numpy(),
                                       sigma.detach().cpu().numpy(),
                                       self.arm_npix or [len(wave)], self.continuum)
            flux = torch.as_tensor(x, device=flux.device, dtype=flux.dtype)
            sigma = torch.as_tensor(s, device=sigma.device, dtype=sigma.dtype)
        if self.fill_unusable:
            flux = fill_unusable(flux, torch.isfinite(sigma))
        return flux, sigma

    def scaler(self) -> LabelScaler:
        """The z-scoring of transformed labels as the zoo's module (float32 buffers)."""
        return LabelScaler(torch.as_tensor(self.mean), torch.as_tensor(self.std))

    def z(self, labels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, K) labels in their units -> z-scores, float32."""
        t = self.transformed(np.asarray(labels, dtype=np.float64))
        return self.scaler()(torch.as_tensor(t).float())

    def unz(self, z: torch.Tensor | np.ndarray) -> np.ndarray:
        """z-scores (..., K) -> labels in their units, float64."""
        z = np.asarray(z, dtype=np.float64)
        return self.untransformed(z * np.asarray(self.std) + np.asarray(self.mean))

    def unz_err(self, z: torch.Tensor | np.ndarray, z_err: torch.Tensor | np.ndarray
                ) -> np.ndarray:
        """1σ uncertainties (..., K) in z-scores at ``z`` -> in the labels' units (the
        delta method through a transform: σ_x = slope · x · σ_t)."""
        err = np.asarray(z_err, dtype=np.float64) * np.asarray(self.std)
        if self.transforms:
            labels = self.unz(z)
            for name, kind in self.transforms.items():
                k = self.labels.index(name)
                err[..., k] = _SLOPE[kind] * labels[..., k] * err[..., k]
        return err

    def z_domain(self) -> tuple[np.ndarray, np.ndarray]:
        """The training domain in z-scores: (low (K,), high (K,))."""
        z = self.z(np.stack([self.low, self.high])).double().numpy()
        return z[0], z[1]


def labels_of(batch: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """(B, K) float64 labels from a numpy batch of columns."""
    return np.stack([np.asarray(batch[n], dtype=np.float64) for n in names], axis=1)
