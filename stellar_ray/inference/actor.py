"""The callable classes Ray Data runs in each actor of the pool. :class:`CatalogActor` loads
the artifact once, brings each batch of spectra to the model's frame (RV measured and
removed if asked, the model's resolution and grid) and turns it into catalog rows;
subclasses give the estimates (:mod:`.predict` for regressors and the cINN, :mod:`.fit` for
emulators). :class:`BatchActor` is what it shares with the other catalog jobs."""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import pyarrow as pa
import torch

from ..artifact import Artifact, load_artifact
from ..calibration import recalibrated
from ..errors import ConfigError
from ..quantities import C_KMS, doppler_factor
from ..runtime import pick_device
from ..spectra.dataset import load_manifest
from ..spectra.manifest import Manifest
from ..spectra.match import GridMatcher
from ..spectra.raydata import SOURCE_COLUMN
from ..spectra.schema import ID_COLUMN, POSITION_COLUMNS
from ..spectra.velocity import Templates, VelocityMeter
from ..threads import best_threads
from .config import CatalogJobConfig, InferConfig
from .quality import CatalogFlag, quality_flags, snr_of, unusable
from .templates import emulator_templates, load_templates

log = logging.getLogger(__name__)

#: Fault injection for tests and drills: "N:MARKER" makes the actor that serves its N-th
#: batch exit abruptly, once (MARKER records that it happened).
KILL_ENV = "STELLAR_RAY_KILL_ACTOR_AT"


class BatchActor:
    """What every catalog job's actor does: threads as allotted, the fault-injection hook,
    and the per-spectrum S/N, unusable share and quality flags."""

    def __init__(self, config: CatalogJobConfig) -> None:
        # Ray hands batches over as read-only arrays; the tensors made from them are only read.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        self.config = config
        # the user's count, else the best measured count up to the CPUs the actor holds
        threads = config.actors.threads_per_actor or best_threads(config.actors.cpus_per_actor)
        torch.set_num_threads(threads)
        self.calls = 0

    def quality_columns(self, batch: dict[str, np.ndarray], flux: np.ndarray,
                        sigma: np.ndarray, bad: np.ndarray, wave: np.ndarray,
                        estimates: np.ndarray, low: np.ndarray, high: np.ndarray
                        ) -> dict[str, np.ndarray]:
        """snr, bad_pixel_fraction and flags of the spectra (B, L) on ``wave`` whose
        ``estimates`` (B, K) are judged against the domain [low, high]."""
        bad_fraction = bad.mean(axis=1)
        snr = snr_of({**batch, "flux": flux, "sigma": sigma}, wave)
        noiseless = np.all(np.where(bad, 0.0, sigma) == 0, axis=1) & ~bad.all(axis=1)
        snr = np.where(noiseless & ~np.isfinite(snr), np.inf, snr)  # model spectra
        quality = self.config.quality
        flags = quality_flags(estimates, low=low, high=high, snr=snr,
                              bad_fraction=bad_fraction, min_snr=quality.min_snr,
                              max_bad_fraction=quality.max_bad_fraction)
        return {"snr": snr.astype(np.float32),
                "bad_pixel_fraction": bad_fraction.astype(np.float32), "flags": flags}

    def carried(self, out: dict[str, np.ndarray], batch: dict[str, np.ndarray]
                ) -> dict[str, np.ndarray]:
        """``out`` with the spectra's sky positions (ra, dec in degrees, NaN where
        unknown), the input columns the job carries (``input_<name>``) and the source shard
        the driver groups rows by."""
        for name in POSITION_COLUMNS:
            if name in batch:
                out[name] = np.asarray(batch[name], dtype=np.float64)
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


def model_frame(config: InferConfig, artifact: Artifact, manifest: Manifest) -> GridMatcher:
    """How the dataset's spectra reach the model's grid, resolution and rest frame (raises
    a SpectraError naming the dataset when they cannot)."""
    return GridMatcher.between(manifest.grid, manifest.resolution, artifact.grid,
                               artifact.metadata.resolution, where=config.data)


def rv_templates(config: InferConfig, artifact: Artifact) -> Templates:
    """The templates of the inference's RV stage: ``rv.templates``, else the model itself
    when it emulates."""
    rv = config.rv
    if rv.templates:
        return load_templates(rv.templates, rv.n_templates, rv, config.storage_options)
    if "fit" not in artifact.task.modes:
        raise ConfigError(f"measuring radial velocities needs templates: this "
                          f"{artifact.task.family} does not emulate spectra; give "
                          "rv.templates (an emulator artifact or a rest-frame dataset)",
                          where=config.model, field="rv.templates")
    return emulator_templates(artifact, rv.n_templates, rv)


class CatalogActor(BatchActor):
    """Base of the inference pool's callable classes: batch (numpy columns on the dataset's
    grid) -> catalog columns. The spectra are first measured for RV (if asked) and brought
    to the model's frame; subclasses give the estimates (``mode``: the inference mode they
    serve), which are widened by the artifact's error model where its validation asks."""

    mode = "predict"

    def __init__(self, config_json: str) -> None:
        super().__init__(InferConfig.model_validate_json(config_json))
        config = self.config
        self.device = pick_device()
        self.artifact: Artifact = load_artifact(config.model, config.storage_options,
                                                device=self.device)
        self.task = self.artifact.task
        self.norm = self.artifact.normalisation
        self.wave = self.artifact.grid.wavelength()
        manifest = load_manifest(config.data, config.storage_options)
        self.noiseless = manifest.uncertainties == "none"
        self.frame = model_frame(config, self.artifact, manifest)
        self.meter = None
        if config.rv.measure:
            self.meter = VelocityMeter(rv_templates(config, self.artifact),
                                       manifest.grid.wavelength(), manifest.grid.arm_npix(),
                                       config.rv)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        if self.device.type == "cuda" and config.gpu_precision == "tf32":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def estimate(self, flux: torch.Tensor, sigma: torch.Tensor, usable: torch.Tensor
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(labels (B, K) float64, further columns) for flux and sigma (B, L) on the
        device; ``usable`` (B, L) is False on pixels without usable flux. A further column
        ``_flags`` (B,) int32 is ORed into the catalog's flags."""
        raise NotImplementedError

    def in_model_frame(self, batch: dict[str, np.ndarray]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(flux, sigma, unusable) (B, L) on the model's grid, at its resolution and at rest,
        and the RV stage's columns (rv, rv_err, rv_ccf and the flags it sets)."""
        flux = np.asarray(batch["flux"], dtype=np.float32)
        sigma = np.asarray(batch["sigma"], dtype=np.float32)
        mask = np.asarray(batch["mask"])
        columns: dict[str, np.ndarray] = {}
        rv = None
        flags = np.zeros(len(flux), dtype=np.int32)
        if self.meter is not None:
            measured = self.meter.measure(flux, sigma,
                                          ~unusable(flux, sigma, mask, self.noiseless))
            rv = np.where(measured.reliable, measured.rv, np.nan)
            columns = {"rv": measured.rv, "rv_err": measured.rv_err,
                       "rv_ccf": measured.ccf.astype(np.float32)}
            flags[~measured.reliable] |= CatalogFlag.RV_UNRELIABLE
            flags[measured.reliable] |= CatalogFlag.RESAMPLED
        if not self.frame.identity or rv is not None:
            flux, sigma, mask = self.frame.apply(flux, sigma, mask, rv)
            if not self.frame.identity:
                flags |= CatalogFlag.RESAMPLED
        columns["_flags"] = flags
        return flux, sigma, unusable(flux, sigma, mask, self.noiseless), columns

    def recalibrated(self, mode: str, labels: np.ndarray, extra: dict[str, np.ndarray]
                     ) -> dict[str, np.ndarray]:
        """``extra`` with the uncertainties widened by the artifact's error model, where
        its validation found them miscalibrated in this inference ``mode``."""
        cal = self.artifact.metadata.calibration
        if not (self.config.recalibrate and cal is not None and cal.applied
                and cal.mode in (None, mode)):
            return extra
        table = pa.table({**{n: labels[:, k] for k, n in enumerate(self.norm.labels)},
                          **{k: v for k, v in extra.items() if k != "_flags"}})
        for name, c in cal.labels.items():
            table = recalibrated(table, name, c.scale, c.floor)
        return {k: (table.column(k).to_numpy() if k in table.column_names else v)
                for k, v in extra.items()}

    def novelty_of(self, x: torch.Tensor, s: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(ood_score (B,) float32, flags (B,) int32) of model inputs x, σ (B, L) against
        the training set: OUT_OF_DISTRIBUTION where the score passes the threshold."""
        novelty = self.artifact.novelty
        score = novelty.score(x, s).cpu().numpy()
        flags = np.where(score > novelty.threshold, int(CatalogFlag.OUT_OF_DISTRIBUTION), 0)
        return score.astype(np.float32), flags.astype(np.int32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._maybe_die()
        n = len(batch["flux"])
        flux, sigma, bad, stage = self.in_model_frame(batch)
        # Unusable pixels hold flux 0 and sigma +inf, as in the datasets the model was
        # trained on; model_input then treats them as training did.
        x = torch.as_tensor(np.where(bad, 0.0, flux), device=self.device)
        s = torch.as_tensor(np.where(bad, np.inf, sigma), device=self.device)
        try:
            x, s = self.norm.model_input(self.wave, x, s)  # as in training
            with torch.no_grad():
                labels, extra = self.estimate(x, s, torch.as_tensor(~bad, device=self.device))
                extra = self.recalibrated(self.mode, labels, extra)
                if self.artifact.novelty is not None:
                    score, flags = self.novelty_of(x, s)
                    extra = {**extra, "ood_score": score,
                             "_flags": extra.get("_flags", np.int32(0)) | flags}
        except Exception:  # noqa: BLE001 - one bad batch becomes flagged rows, not a dead job
            log.exception("inference failed for a batch of %d spectra starting with %s", n,
                          batch[ID_COLUMN][0])
            labels, extra = np.full((n, len(self.norm.labels)), np.nan), {}
        out = {ID_COLUMN: np.asarray(batch[ID_COLUMN], dtype=object),
               "model": np.full(n, self.artifact.metadata.model, dtype=object),
               "model_version": np.full(n, self.artifact.artifact_id, dtype=object)}
        for k, name in enumerate(self.norm.labels):
            out[name] = labels[:, k]
        stage_flags = stage.pop("_flags")
        if "rv" in extra and "rv" in stage:  # fit mode refined the measured velocity
            extra["rv"] = (doppler_factor(stage["rv"]) * doppler_factor(extra["rv"]) - 1) * C_KMS
            stage = {k: v for k, v in stage.items() if k not in extra}
        out.update(stage)
        out.update(extra)
        out.update(self.quality_columns(batch, flux, sigma, bad, self.wave, labels,
                                        np.asarray(self.norm.low), np.asarray(self.norm.high)))
        out["flags"] |= stage_flags
        if "_flags" in out:  # the estimator's own flags
            out["flags"] |= out.pop("_flags")
        return self.carried(out, batch)
