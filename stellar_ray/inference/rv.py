"""``stellar-ray rv``: radial velocities of a dataset's spectra by cross-correlation against
templates (:mod:`stellar_ray.spectra.velocity`), into a catalog with the same machinery as
``infer`` (actor pool, one committed part per shard, resumable)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..config_files import load_config
from ..spectra.dataset import load_manifest
from ..spectra.schema import ID_COLUMN
from ..spectra.velocity import VelocityMeter
from .actor import BatchActor
from .config import RVConfig
from .pipeline import CatalogJob, InferSummary, catalog_units, run_catalog_job
from .quality import CatalogFlag, unusable
from .templates import load_templates


class VelocityActor(BatchActor):
    """The pool's callable class: batch -> spectrum_id, rv, rv_err, rv_ccf, rv_template,
    snr, bad_pixel_fraction, flags (RV_UNRELIABLE where the measurement is not to be
    trusted)."""

    def __init__(self, config_json: str) -> None:
        super().__init__(RVConfig.model_validate_json(config_json))
        cfg = self.config
        manifest = load_manifest(cfg.data, cfg.storage_options)
        self.wave = manifest.grid.wavelength()
        templates = load_templates(cfg.rv.templates, cfg.rv.n_templates, cfg.rv,
                                   cfg.storage_options)
        self.names = np.asarray(templates.names, dtype=object)
        self.meter = VelocityMeter(templates, self.wave, manifest.grid.arm_npix(), cfg.rv)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._maybe_die()
        flux = np.asarray(batch["flux"], dtype=np.float32)
        sigma = np.asarray(batch["sigma"], dtype=np.float32)
        bad = unusable(flux, sigma, np.asarray(batch["mask"]))
        v = self.meter.measure(flux, sigma, ~bad)
        out = {ID_COLUMN: np.asarray(batch[ID_COLUMN], dtype=object), "rv": v.rv,
               "rv_err": v.rv_err, "rv_ccf": v.ccf.astype(np.float32),
               "rv_template": self.names[v.template]}
        none = np.empty((len(flux), 0))
        out.update(self.quality_columns(batch, flux, sigma, bad, self.wave, none, none[0],
                                        none[0]))
        out["flags"][~v.reliable] |= CatalogFlag.RV_UNRELIABLE
        out["flags"][~np.isfinite(v.rv)] |= CatalogFlag.FAILED
        return self.carried(out, batch)


def measure_velocities(cfg: RVConfig | dict | str | Path, address: str | None = None,
                       progress: bool = True) -> InferSummary:
    """Measure the radial velocity of every spectrum of ``cfg.data`` into the catalog
    ``cfg.to`` (an RVConfig, its dict or a YAML path); resumes a catalog that exists."""
    cfg = load_config(RVConfig, cfg)
    started = time.perf_counter()
    manifest = load_manifest(cfg.data, cfg.storage_options)
    # fail fast: a template source that cannot be read is reported before the pool starts
    load_templates(cfg.rv.templates, cfg.rv.n_templates, cfg.rv, cfg.storage_options)
    job = CatalogJob(actor=VelocityActor, claim={"templates": cfg.rv.templates},
                     producer="stellar-ray rv",
                     units=catalog_units(None, manifest, cfg.carry_columns))
    return run_catalog_job(cfg, manifest, job, address, progress, started)
