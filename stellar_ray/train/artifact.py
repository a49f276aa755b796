"""The model artifact: everything inference needs, in one directory or URL.

    weights.safetensors         model weights (safetensors: loading runs no pickled code)
    metadata.json               model name and arguments, family, labels with units, the
                                normalisation, training domain, wavelength grid, metrics,
                                provenance (code version, dependencies, platform, config)
    reference/inputs.safetensors   a few inputs ...
    reference/outputs.safetensors  ... and the outputs this model gave for them
    integrity.json              SHA-256 of every file above and an artifact id

``load_artifact`` checks every hash before building the model; ``Artifact.verify()`` reruns
the reference inputs and compares (a copy proves it predicts the same anywhere).
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..models.registry import build, card
from ..spectra.errors import ChecksumError, SpectraError
from ..spectra.grid import WavelengthGrid
from ..spectra.storage import join, read_bytes, resolve, write_bytes_atomic
from ..version import code_version
from .objectives import Normalisation, labels_of

ARTIFACT_VERSION = 1
FILES = ("weights.safetensors", "metadata.json", "reference/inputs.safetensors",
         "reference/outputs.safetensors")


def _dependencies() -> dict[str, str]:
    out = {}
    for pkg in ("torch", "ray", "numpy", "pyarrow", "zuko"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - a missing optional package is simply not listed
            continue
    return out


@dataclass
class Artifact:
    """A loaded artifact: the model in eval mode, its metadata and normalisation."""

    model: torch.nn.Module
    metadata: dict[str, Any]
    normalisation: Normalisation
    reference: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]
    artifact_id: str  # "sha256:…" over the files' hashes, from integrity.json

    @property
    def grid(self) -> WavelengthGrid:
        return WavelengthGrid.model_validate(self.metadata["grid"])

    def verify(self, rtol: float = 1e-4, atol: float = 1e-5) -> None:
        """Rerun the reference inputs; raise if any output differs beyond tolerance."""
        inputs, outputs = self.reference
        got = run_reference(self.model, self.metadata["family"], inputs)
        for key, want in outputs.items():
            if not torch.allclose(got[key], want, rtol=rtol, atol=atol):
                diff = float((got[key] - want).abs().max())
                raise SpectraError(f"reference output '{key}' differs by up to {diff:.3g} from "
                                   "the one recorded at training time")


def run_reference(model: torch.nn.Module, family: str, inputs: dict[str, torch.Tensor]
                  ) -> dict[str, torch.Tensor]:
    """The model's deterministic outputs for the reference inputs."""
    model.eval()
    with torch.no_grad():
        if family == "emulator":
            args = (inputs["labels_z"],) if "wavelength" not in inputs else (
                inputs["labels_z"], inputs["wavelength"])
            return {"flux": model(*args)}
        if family == "posterior":
            return {"summary": model.summary(inputs["flux"]),
                    "log_prob": model(inputs["flux"], inputs["labels_z"])}
        return {"labels_z": model(inputs["flux"])}


def _packed(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous copies, as safetensors stores them."""
    return {k: v.detach().contiguous() for k, v in tensors.items()}


def write_artifact(url: str, model: torch.nn.Module, model_name: str,
                   model_args: dict[str, Any], normalisation: Normalisation,
                   grid: WavelengthGrid, metrics: dict[str, float],
                   reference_inputs: dict[str, torch.Tensor], config: dict[str, Any],
                   storage_options: dict | None = None) -> dict[str, Any]:
    """Write an artifact for ``model`` at ``url``; returns its integrity record."""
    family = card(model_name).family
    model = model.cpu().eval()
    outputs = run_reference(model, family, reference_inputs)
    files = {
        "weights.safetensors": save_tensors(_packed(model.state_dict())),
        "reference/inputs.safetensors": save_tensors(_packed(reference_inputs)),
        "reference/outputs.safetensors": save_tensors(_packed(outputs)),
    }
    metadata = {
        "artifact_version": ARTIFACT_VERSION,
        "model": model_name, "model_args": model_args, "family": family,
        "paper": card(model_name).paper, "section": card(model_name).section,
        "labels": [{"name": n, "low": lo, "high": hi} for n, lo, hi in zip(
            normalisation.labels, normalisation.low, normalisation.high)],
        "normalisation": normalisation.to_dict(),
        "grid": grid.model_dump(mode="json"),
        "input": "flux (B, L) on the grid" if family != "emulator"
        else "labels (B, K) z-scored with normalisation.mean/std",
        "output": {"emulator": "flux / normalisation.flux_scale (SM-Net: log1p-scaled)",
                   "regressor": "labels z-scored with normalisation.mean/std",
                   "posterior": "log p(labels_z | flux); sample() for posterior draws"}[family],
        "metrics": metrics,
        "provenance": {"code_version": code_version(), "python": sys.version.split()[0],
                       "platform": platform.platform(), "dependencies": _dependencies(),
                       "config": config},
    }
    files["metadata.json"] = json.dumps(metadata, indent=1, sort_keys=True).encode()
    fs, base = resolve(url, storage_options)
    tree = []
    for name in FILES:
        write_bytes_atomic(fs, join(base, name), files[name])
        tree.append({"path": name, "sha256": hashlib.sha256(files[name]).hexdigest()})
    artifact_id = hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()
    integrity = {"algorithm": "sha256", "artifact_id": f"sha256:{artifact_id}", "files": tree}
    write_bytes_atomic(fs, join(base, "integrity.json"), json.dumps(integrity, indent=1)
                       .encode())
    return integrity


def load_artifact(url: str, storage_options: dict | None = None,
                  device: str | torch.device = "cpu") -> Artifact:
    """Load and check an artifact (every file's SHA-256), build its model, load weights."""
    fs, base = resolve(url, storage_options)
    try:
        integrity = json.loads(read_bytes(fs, join(base, "integrity.json")))
    except FileNotFoundError as err:
        raise SpectraError("no model artifact here (missing integrity.json)", file=url) from err
    data = {}
    for entry in integrity["files"]:
        blob = read_bytes(fs, join(base, entry["path"]))
        if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
            raise ChecksumError("file does not match its recorded SHA-256",
                                file=f"{url}/{entry['path']}")
        data[entry["path"]] = blob
    metadata = json.loads(data["metadata.json"])
    if metadata.get("artifact_version", 0) > ARTIFACT_VERSION:
        raise SpectraError("artifact made by a newer stellar-ray", file=url)
    model = build(metadata["model"], **metadata["model_args"])
    model.load_state_dict(load_tensors(data["weights.safetensors"]))
    model.to(device).eval()
    norm = Normalisation(**{k: (tuple(v) if k == "log1p" and v is not None else v)
                            for k, v in metadata["normalisation"].items()})
    reference = (load_tensors(data["reference/inputs.safetensors"]),
                 load_tensors(data["reference/outputs.safetensors"]))
    return Artifact(model=model, metadata=metadata, normalisation=norm, reference=reference,
                    artifact_id=integrity["artifact_id"])


def reference_inputs(family: str, norm: Normalisation, batch: dict[str, np.ndarray],
                     n: int = 4) -> dict[str, torch.Tensor]:
    """A few inputs from a validation batch, in model space."""
    z = norm.z(labels_of(batch, norm.labels))[:n]
    out = {"labels_z": torch.nan_to_num(z)}
    if family != "emulator":
        out["flux"] = torch.tensor(np.array(batch["flux"][:n]), dtype=torch.float32)
    elif norm.wavelength is not None:
        out["wavelength"] = torch.as_tensor(norm.wavelength, dtype=torch.float32)[:256]
    return out
