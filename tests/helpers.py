"""Helpers shared by several test modules: test instruments and surveys, tiny model sizes,
artifacts of (untrained) models for a survey, a survey's ids, free local ports."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import torch

from stellar_ray.artifact import package_model
from stellar_ray.models import build
from stellar_ray.spectra.dataset import load_manifest
from stellar_ray.spectra.raydata import read_spectra

#: Labels the training and inference tests use.
LABELS = ["teff", "logg", "fe_h"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_instrument(start: float, step: float, npix: int, resolving_power: float) -> dict:
    """A one-arm instrument definition for simulation configs in tests (Å)."""
    hi = start + step * (npix - 1)
    return {"mode": "TEST",
            "grid": {"arms": [{"name": "r", "kind": "linear", "start": start, "step": step,
                               "npix": npix}]},
            "arms": [{"name": "r", "lo": start, "hi": hi, "resolving_power": resolving_power}]}


SURVEY = {
    "instrument": make_instrument(6150.0, 1.0, 256, 5000.0),
    "n_spectra": 320, "rows_per_shard": 64, "seed": 3,
    "prior": {"kind": "uniform",
              "ranges": {"teff": [4000, 7000], "logg": [1.0, 5.0], "fe_h": [-1.5, 0.3]},
              "fixed": {"vsini": 2.0, "rv": 0.0, "alpha_fe": 0.0, "ca_fe": 0.0, "mg_fe": 0.0,
                        "li_fe": 0.0, "vmic": 1.0}},
    "snr": {"kind": "fixed", "value": 100},
}
TINY = {
    "specvit": {"d": 32, "heads": 4, "layers": 2},
    "payne": {"hidden": [64, 64]},
    "cinn": {"condition_config": {"d": 32, "stem": [8, 16, 16], "lstm_hidden": 16,
                                  "heads": 4, "layers": 1},
             "transforms": 2, "hidden": [32, 32]},
}


def first_batch(url: str) -> dict[str, np.ndarray]:
    """The whole (small) dataset at ``url`` as one numpy batch."""
    return next(iter(read_spectra(url).iter_batches(batch_size=10_000,
                                                    batch_format="numpy")))


def dataset_ids(url: str) -> list[str]:
    """The dataset's spectrum ids, sorted."""
    return sorted(i for b in read_spectra(url, columns=["spectrum_id"]).iter_batches(
        batch_format="numpy") for i in b["spectrum_id"])


def make_artifact(url: str, out: Path, name: str, model: torch.nn.Module | None = None,
                  labels: list[str] = LABELS) -> str:
    """An artifact of ``name`` (untrained unless ``model`` is given) for the survey at
    ``url``, taking or giving ``labels``, written under ``out``."""
    manifest = load_manifest(url)
    args = {**TINY.get(name, {"hidden": [32, 32]}), "n_labels": len(labels),
            "n_pix": manifest.npix}
    model = model or build(name, **args)
    return package_model(str(out / name), model, model_name=name, model_args=args,
                         batch=first_batch(url), labels=labels, grid=manifest.grid)


def fitted_payne(url: str, out: Path, steps: int = 400, seed: int = 0,
                 labels: list[str] = LABELS) -> str:
    """A small Payne of ``labels`` fitted in this process (full-batch Adam, ``steps`` steps)
    to the spectra of the small dataset at ``url``, stored as an artifact under ``out``: a
    real emulator in seconds, without a Ray Train run."""
    from stellar_ray.artifact import load_artifact

    torch.manual_seed(seed)
    untrained = load_artifact(make_artifact(url, out / "untrained", "payne", labels=labels))
    norm, task, model = untrained.normalisation, untrained.task, untrained.model
    batch = first_batch(url)
    inputs, target = task.prepare(batch, norm, untrained.grid.wavelength(), noise_alpha=0.0,
                                  train=True, generator=torch.Generator().manual_seed(seed))
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = task.loss(model, inputs, target, "mse")
        loss.backward()
        optimiser.step()
    model.eval()
    manifest = load_manifest(url)
    return package_model(str(out / "payne"), model, model_name="payne",
                         model_args=untrained.metadata.model_args, batch=batch,
                         labels=labels, grid=manifest.grid,
                         metrics={"train_mse": float(loss.detach())})
