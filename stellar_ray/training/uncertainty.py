"""A trained model's uncertainties, checked on its validation spectra before its artifact is
written: the estimates and errors inference would give (at the inference defaults: posterior
draws, noise re-draws), their 68 % and 95 % coverage per label, and — where the coverage
misses by more than the configured tolerance — the error model σ' = √((scale σ)² + floor²)
that inference then applies (:func:`stellar_ray.calibration.error_model`).

Point regressors' σ from noise re-draws carries the noise only, not the model's own error,
so it is too small wherever that error matters; a posterior trained for few epochs may be
too wide or too narrow. The floor term covers the first, the scale the second.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import torch

from ..artifact import LabelCalibration, UncertaintyCalibration
from ..calibration import LEVELS, calibrate, error_model, recalibrated
from ..inference.config import InferConfig
from ..inference.quality import snr_of
from ..models.normalisation import Normalisation, labels_of
from ..models.tasks import Task
from .config import CalibrationConfig

log = logging.getLogger(__name__)

#: Validation spectra per model call while predicting.
CHUNK = 128


def predicted_catalog(task: Task, model: torch.nn.Module, norm: Normalisation,
                      flux: torch.Tensor, sigma: torch.Tensor, snr: np.ndarray, *,
                      samples: int, quantiles: Sequence[float], noise_redraws: int,
                      seed: int) -> pa.Table:
    """The catalog columns predict mode gives for model inputs flux, σ (B, L) (labels,
    ``<label>_err``, quantile columns) and ``snr`` (B,)."""
    generator = torch.Generator().manual_seed(seed)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, len(flux), CHUNK):
        part = slice(start, start + CHUNK)
        labels, extra = task.predict(model, norm, flux[part], sigma[part], samples=samples,
                                     quantiles=quantiles, noise_redraws=noise_redraws,
                                     generator=generator)
        parts.append({**{n: labels[:, k] for k, n in enumerate(norm.labels)}, **extra})
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return pa.table({**columns, "snr": np.asarray(snr, dtype=np.float64)})


def _coverage(table: pa.Table, name: str, truth: np.ndarray) -> tuple[float, float]:
    got = calibrate(table, name, truth).coverage
    return got[LEVELS[0]], got[LEVELS[1]]


def check_uncertainties(cfg: CalibrationConfig, task: Task, model: torch.nn.Module,
                        norm: Normalisation, wave: np.ndarray,
                        batch: dict[str, np.ndarray], seed: int
                        ) -> UncertaintyCalibration | None:
    """The validation coverage of ``model``'s uncertainties on ``batch`` (dataset columns
    on its grid ``wave`` (L,) Å) and the recalibration ``cfg`` asks for; None when the
    model gives no errors (noise re-draws off) or too few spectra have truths."""
    defaults = InferConfig.model_fields
    samples, quantiles = defaults["samples"].default, defaults["quantiles"].default
    redraws = defaults["noise_redraws"].default
    truth = labels_of(batch, norm.labels)
    if np.isfinite(truth).all(axis=1).sum() < cfg.min_spectra:
        log.info("uncertainties not checked: fewer than %d validation spectra with all "
                 "labels", cfg.min_spectra)
        return None
    model.eval()
    flux = torch.as_tensor(np.asarray(batch["flux"], dtype=np.float32))
    sigma = torch.as_tensor(np.asarray(batch["sigma"], dtype=np.float32))
    x, s = norm.model_input(wave, flux, sigma)
    table = predicted_catalog(task, model.cpu(), norm, x, s, snr_of(batch, wave),
                              samples=samples, quantiles=quantiles, noise_redraws=redraws,
                              seed=seed)
    names = list(norm.labels)
    if not all(np.isfinite(table.column(f"{n}_err").to_numpy()).any() for n in names):
        return None
    apply, labels = label_calibration(table, names, truth, cfg.recalibrate, cfg.tolerance)
    return UncertaintyCalibration(spectra=len(table), samples=samples, noise_redraws=redraws,
                                  applied=apply, labels=labels)


def label_calibration(table: pa.Table, names: Sequence[str], truth: np.ndarray,
                      recalibrate: str, tolerance: float
                      ) -> tuple[bool, dict[str, LabelCalibration]]:
    """Each label's coverage in ``table`` (estimates and ``<label>_err``) against ``truth``
    (N, K), and whether the error model is applied (``recalibrate`` always, or auto when a
    coverage misses its level by more than ``tolerance``), with it where it is."""
    measured = {n: _coverage(table, n, truth[:, k]) for k, n in enumerate(names)}
    missed = any(abs(got - level) > tolerance
                 for pair in measured.values() for got, level in zip(pair, LEVELS))
    apply = recalibrate == "always" or (recalibrate == "auto" and missed)
    labels = {}
    for k, name in enumerate(names):
        entry = LabelCalibration(coverage68=measured[name][0], coverage95=measured[name][1])
        if apply:
            scale, floor = error_model(table, name, truth[:, k])
            after = _coverage(recalibrated(table, name, scale, floor), name, truth[:, k])
            entry = entry.model_copy(update={"scale": scale, "floor": floor,
                                             "recalibrated68": after[0],
                                             "recalibrated95": after[1]})
        labels[name] = entry
    return apply, labels


def calibration_text(cal: UncertaintyCalibration, units: dict[str, str | None]) -> str:
    """Lines for ``stellar-ray train``'s summary: each label's coverage, before and after."""
    lines = [f"uncertainties on {cal.spectra} validation spectra "
             f"({'recalibrated' if cal.applied else 'as given'}):"]
    for name, c in cal.labels.items():
        line = f"  {name}: 68 % / 95 % intervals hold {c.coverage68:.2f} / {c.coverage95:.2f}"
        if cal.applied:
            line += (f" -> {c.recalibrated68:.2f} / {c.recalibrated95:.2f} with σ' = "
                     f"√(({c.scale:.3g} σ)² + ({c.floor:.3g} {units.get(name) or ''})²)")
        lines.append(line)
    return "\n".join(lines)
