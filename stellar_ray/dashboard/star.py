"""One catalog row traced back to its spectrum: the observed spectrum brought to the model's
frame exactly as inference did it (the catalog's recorded inference configuration, run
through the same actor class), with the model at the row's estimates (fit and gp modes) or
fresh posterior draws (the cINN)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..artifact import read_metadata
from ..errors import ConfigError
from ..inference.config import InferConfig
from ..inference.fit import EmulatorFitter, pixel_weights
from ..inference.pipeline import ACTORS, inference_mode
from ..models.registry import card
from ..quantities import C_KMS, doppler_factor
from .lookup import SpectrumLookup

#: Posterior draws for a corner plot.
CORNER_SAMPLES = 1024


@dataclass
class StarSpectrum:
    """A star as the model saw it: wavelength (L,) Å, flux and sigma (L,) with NaN on
    unusable pixels, the model flux (L,) at the catalog's estimates (None without an
    emulator) and posterior draws (S, K) in the labels' units (None without a flow)."""

    spectrum_id: str
    wavelength: np.ndarray
    flux: np.ndarray
    sigma: np.ndarray
    model: np.ndarray | None
    samples: np.ndarray | None
    labels: list[str]
    mode: str


def recorded_config(provenance: dict[str, Any] | None, data: str | None, model: str | None
                    ) -> InferConfig:
    """The inference configuration a catalog records, with ``data`` and ``model``
    replacing its own where given (a catalog moved, or its inputs copied elsewhere)."""
    recorded = dict(provenance or {})
    fields = InferConfig.model_fields
    config = {k: v for k, v in recorded.items() if k in fields}
    if data:
        config["data"] = data
    if model:
        config["model"] = model
    options = {"data": "--data URL of its spectra", "model": "--artifact URL of its model"}
    missing = [k for k in options if not config.get(k)]
    if missing:
        raise ConfigError(f"the catalog does not record its {' and '.join(missing)}: give "
                          + " and ".join(options[k] for k in missing), field=missing[0])
    config.setdefault("to", "unused")  # nothing is written: the actor is only called
    return InferConfig.model_validate(config)


class StarInspector:
    """Traces rows of one catalog: builds the inference actor once (on first use)."""

    def __init__(self, config: InferConfig) -> None:
        self.config = config
        self.lookup = SpectrumLookup(config.data, config.storage_options)
        metadata = read_metadata(config.model, config.storage_options)
        self.mode = inference_mode(config, card(metadata.model).task)  # the actor loads it
        self._actor: Any = None
        self._lock = threading.Lock()

    def actor(self) -> Any:
        if self._actor is None:
            self._actor = ACTORS[self.mode](self.config.model_dump_json())
        return self._actor

    def inspect(self, row: dict[str, Any]) -> StarSpectrum:
        """The spectrum of catalog ``row`` (its columns by name) in the model's frame."""
        with self._lock:  # one actor, and torch, shared by the server's threads
            actor = self.actor()
            batch = self.lookup.spectrum(row["spectrum_id"])
            flux, sigma, bad, stage = actor.in_model_frame(batch)
            x = torch.as_tensor(np.where(bad, 0.0, flux), device=actor.device)
            s = torch.as_tensor(np.where(bad, np.inf, sigma), device=actor.device)
            x, s = actor.norm.model_input(actor.wave, x, s)
            names = list(actor.norm.labels)
            model = samples = None
            with torch.no_grad():
                if isinstance(actor, EmulatorFitter):
                    model = self._model(actor, row, stage, x, s, torch.as_tensor(~bad))
                elif hasattr(actor.artifact.model, "sample"):
                    z = actor.artifact.model.sample(x, CORNER_SAMPLES)  # (S, 1, K)
                    samples = actor.norm.unz(z.reshape(-1, len(names)).cpu())
        shown = ~bad[0]
        return StarSpectrum(
            spectrum_id=str(row["spectrum_id"]), wavelength=np.asarray(actor.wave),
            flux=np.where(shown, x[0].cpu().numpy(), np.nan),
            sigma=np.where(shown, s[0].cpu().numpy(), np.nan),
            model=model, samples=samples, labels=names, mode=self.mode)

    @staticmethod
    def _model(actor: EmulatorFitter, row: dict[str, Any], stage: dict[str, np.ndarray],
               x: torch.Tensor, s: torch.Tensor, usable: torch.Tensor) -> np.ndarray | None:
        """The fitted model (L,) at the row's estimates (None if they are not finite). A
        velocity measured before the fit was already removed: only the fit's own part of
        the row's ``rv`` moves the model."""
        labels = np.array([[row.get(n, np.nan) for n in actor.norm.labels]], dtype=np.float64)
        if not np.all(np.isfinite(labels)):
            return None
        rv = row.get("rv")
        if rv is not None and "rv" in stage and np.isfinite(stage["rv"][0]):
            rv = float((doppler_factor(rv) / doppler_factor(stage["rv"][0]) - 1) * C_KMS)
        params = actor.parameters(labels, None if rv is None else np.array([rv]),
                                  None if row.get("broadening") is None
                                  else np.array([row["broadening"]]))
        weight, _ = pixel_weights(s, usable.to(s.device))
        return actor.fitted(params, x, weight)[0].cpu().double().numpy()
