"""The callable class Ray Data runs in each actor of the pool: it loads the artifact once,
then turns batches of spectra into catalog rows. Subclasses give the estimates
(:mod:`.predict` for regressors and the cINN, :mod:`.fit` for emulators)."""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import torch

from ..artifact import Artifact, load_artifact
from ..runtime import pick_device
from ..spectra.raydata import SOURCE_COLUMN
from ..spectra.schema import ID_COLUMN
from .config import InferConfig
from .quality import CatalogFlag, quality_flags, snr_of, unusable

log = logging.getLogger(__name__)

#: Fault injection for tests and drills: "N:MARKER" makes the actor that serves its N-th
#: batch exit abruptly, once (MARKER records that it happened).
KILL_ENV = "STELLAR_RAY_KILL_ACTOR_AT"


class CatalogActor:
    """Base of the pool's callable classes: batch (numpy columns) -> catalog columns."""

    def __init__(self, config_json: str) -> None:
        # Ray hands batches over as read-only arrays; the tensors made from them are only read.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        self.config = InferConfig.model_validate_json(config_json)
        threads = self.config.actors.threads_per_actor or max(
            1, int(self.config.actors.cpus_per_actor))
        torch.set_num_threads(threads)
        self.device = pick_device()
        self.artifact: Artifact = load_artifact(self.config.model, self.config.storage_options,
                                                device=self.device)
        self.task = self.artifact.task
        self.norm = self.artifact.normalisation
        self.wave = self.artifact.grid.wavelength()
        self.generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        self.calls = 0

    def estimate(self, flux: torch.Tensor, sigma: torch.Tensor, usable: torch.Tensor
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(labels (B, K) float64, further columns) for flux and sigma (B, L) on the
        device; ``usable`` (B, L) is False on pixels without usable flux."""
        raise NotImplementedError

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._maybe_die()
        flux = np.asarray(batch["flux"], dtype=np.float32)
        sigma = np.asarray(batch["sigma"], dtype=np.float32)
        bad = unusable(flux, sigma, np.asarray(batch["mask"]))
        n = len(flux)
        # Model inputs follow the dataset convention the model was trained on: unusable
        # pixels hold flux 0 and sigma +inf.
        x = torch.as_tensor(np.where(bad, 0.0, flux), device=self.device)
        s = torch.as_tensor(np.where(bad, np.inf, sigma), device=self.device)
        try:
            x, s = self.norm.continuum_normalised(self.wave, x, s)  # as in training
            with torch.no_grad():
                labels, extra = self.estimate(x, s, torch.as_tensor(~bad, device=self.device))
        except Exception:  # noqa: BLE001 - one bad batch becomes flagged rows, not a dead job
            log.exception("inference failed for a batch of %d spectra starting with %s", n,
                          batch[ID_COLUMN][0])
            labels, extra = np.full((n, len(self.norm.labels)), np.nan), {}
        bad_fraction = bad.mean(axis=1)
        snr = snr_of(batch, self.wave)
        out = {ID_COLUMN: np.asarray(batch[ID_COLUMN], dtype=object),
               "model": np.full(n, self.artifact.metadata.model, dtype=object),
               "model_version": np.full(n, self.artifact.artifact_id, dtype=object)}
        for k, name in enumerate(self.norm.labels):
            out[name] = labels[:, k]
        out.update(extra)
        out["snr"] = snr.astype(np.float32)
        out["bad_pixel_fraction"] = bad_fraction.astype(np.float32)
        quality = self.config.quality
        flags = quality_flags(labels, low=np.asarray(self.norm.low),
                              high=np.asarray(self.norm.high), snr=snr,
                              bad_fraction=bad_fraction, min_snr=quality.min_snr,
                              max_bad_fraction=quality.max_bad_fraction)
        if "_failed" in out:
            flags[out.pop("_failed")] |= CatalogFlag.FAILED
        out["flags"] = flags
        for name in self.config.carry_columns:
            out[f"input_{name}"] = np.asarray(batch[name])
        out[SOURCE_COLUMN] = np.asarray(batch[SOURCE_COLUMN], dtype=object)
        return out

    def _maybe_die(self) -> None:
        self.calls += 1
        spec = os.environ.get(KILL_ENV)
        if not spec:
            return
        at, marker = spec.split(":", 1)
        if self.calls == int(at) and not os.path.exists(marker):
            with open(marker, "w") as fh:
                fh.write(f"actor {os.getpid()} killed at batch {self.calls}\n")
            os._exit(1)
