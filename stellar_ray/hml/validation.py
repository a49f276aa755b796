"""An HML generator's uncertainties checked on spectra of known labels (``hml build
--validate``): the spectra are run through ``stellar-ray infer`` in the chosen mode, the
coverage of the 68 % and 95 % intervals is measured per label and, where it misses, the
error model σ' = √((scale σ)² + floor²) is fitted and stored in the artifact for inference
to apply in that mode.

The Jacobian errors of gp and fit mode carry the noise only; a generator's interpolation
error (a few per cent of a grid step) is not in them, so on high-S/N or noiseless spectra
they are far too small; the floor term is that error.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..artifact import UncertaintyCalibration
from ..inference.config import InferConfig
from ..inference.pipeline import infer
from ..spectra.catalog import read_catalog
from ..spectra.dataset import iter_shards
from ..spectra.schema import ID_COLUMN
from ..training.uncertainty import label_calibration


class ValidationConfig(BaseModel):
    """Spectra of known labels to check the generator's uncertainties on."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="URL of a dataset with the generator's labels, inside "
                      "its grid (e.g. the grid's generator at random labels)")
    mode: Literal["gp", "fit"] = "gp"
    infer: dict[str, Any] = Field(default_factory=dict, description="further stellar-ray "
                                  "infer settings (gp, fit, actors, ...)")
    recalibrate: Literal["auto", "always", "never"] = Field(
        default="auto", description="auto: when a label's coverage misses its level by "
        "more than tolerance")
    tolerance: float = Field(default=0.02, gt=0, lt=1, description="coverage points")


def validate(artifact_url: str, labels: list[str], cfg: ValidationConfig, *,
             storage_options: dict | None = None, address: str | None = None
             ) -> tuple[UncertaintyCalibration, dict[str, float]]:
    """The coverage (and error model) of the generator at ``artifact_url`` on
    ``cfg.data``, and the mean absolute error per label."""
    truth_by_id = {}
    for batch in iter_shards(cfg.data, storage_options, verify=False):
        values = np.column_stack([batch.labels[n] for n in labels])
        truth_by_id.update(zip(batch.spectrum_id, values))
    with tempfile.TemporaryDirectory(prefix="hml-validation-") as tmp:
        job = InferConfig.model_validate({
            **cfg.infer, "model": artifact_url, "data": cfg.data, "mode": cfg.mode,
            "to": str(Path(tmp) / "catalog"), "recalibrate": False,
            "storage_options": storage_options})
        infer(job, address=address, progress=False)
        table = read_catalog(job.to)
    truth = np.array([truth_by_id[i] for i in table.column(ID_COLUMN).to_pylist()])
    errors = {f"{name}/mae": float(np.nanmean(np.abs(table.column(name).to_numpy()
                                                     - truth[:, k])))
              for k, name in enumerate(labels)}
    apply, entries = label_calibration(table, labels, truth, cfg.recalibrate, cfg.tolerance)
    calibration = UncertaintyCalibration(spectra=table.num_rows, samples=0, noise_redraws=0,
                                         applied=apply, mode=cfg.mode, labels=entries)
    return calibration, errors
