"""The model artifact: the contract between training, inference, fine-tuning and the
dashboard, in one directory or URL.

    weights.safetensors            model weights (safetensors: loading runs no pickled code)
    metadata.json                  :class:`ArtifactMetadata` (typed, versioned)
    reference/inputs.safetensors   a few inputs ...
    reference/outputs.safetensors  ... and the outputs this model gave for them
    novelty.safetensors            (regressors, posteriors) the input-novelty reference
    integrity.json                 SHA-256 of every file above and the artifact id

:func:`load_artifact` is the one way to open an artifact: it checks every hash and the
metadata version before it builds the model. ``Artifact.verify()`` reruns the reference
inputs and compares (a copy proves it predicts the same anywhere).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import platform
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .errors import ChecksumError, ModelError
from .models.normalisation import Normalisation, labels_of
from .models.novelty import InputNovelty
from .models.registry import build, card
from .models.tasks import Family, Task
from .quantities import default_unit
from .spectra.grid import WavelengthGrid
from .spectra.resolution import Resolution
from .spectra.storage import join, read_bytes, resolve, write_bytes_atomic
from .version import code_version

#: Version of the metadata layout this code writes and reads.
ARTIFACT_VERSION = 2
NOVELTY_FILE = "novelty.safetensors"
_DEPENDENCIES = ("torch", "ray", "numpy", "pyarrow", "zuko", "safetensors")


class LabelInfo(BaseModel):
    """One label the model takes or gives: its unit and the training domain [low, high]."""

    model_config = ConfigDict(extra="forbid")

    name: str
    unit: str | None = None
    low: float
    high: float


class Preprocessing(BaseModel):
    """What is done to flux before the model sees it, the same in training and inference."""

    model_config = ConfigDict(extra="forbid")

    normalise: Literal["none", "median", "continuum"] = Field(
        description="regressors divide each spectrum by its median (inside the model) or, "
        "first, by its pseudo-continuum (normalisation.continuum); emulators give flux in "
        "the dataset's unit")
    unusable_pixels: str = "flux 0, sigma +inf"
    noise_alpha: float = Field(default=0.0, description="α of the fresh noise α ε σ added "
                               "to noiseless model flux in training (0: none)")


class LabelCalibration(BaseModel):
    """One label's uncertainties on the validation set: the coverage of the central 68 %
    and 95 % intervals as the model gives them and after the error model σ' =
    √((scale σ)² + floor²) (floor in the label's unit)."""

    model_config = ConfigDict(extra="forbid")

    coverage68: float
    coverage95: float
    scale: float = 1.0
    floor: float = 0.0
    recalibrated68: float | None = None
    recalibrated95: float | None = None


class UncertaintyCalibration(BaseModel):
    """How often the model's intervals held the truth on its validation spectra, with the
    inference settings they were measured at, and whether inference widens them (a
    post-hoc recalibration, applied to ``<label>_err`` and the quantile columns)."""

    model_config = ConfigDict(extra="forbid")

    spectra: int
    samples: int = Field(description="cINN posterior draws per spectrum")
    noise_redraws: int = Field(description="point regressors' noise re-draws")
    applied: bool = Field(description="inference applies each label's scale and floor")
    mode: str | None = Field(default=None, description="the inference mode the coverage "
                             "was measured in (None: the model's only one, predict)")
    labels: dict[str, LabelCalibration]


class ArtifactProvenance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code_version: str
    python: str
    platform: str
    dependencies: dict[str, str]
    config: dict[str, Any] = Field(default_factory=dict, description="the training "
                                   "configuration, as run")
    training_data: str | None = None


class ArtifactMetadata(BaseModel):
    """Everything a stage needs to use a trained model without its training run."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    artifact_version: int = ARTIFACT_VERSION
    model: str
    model_args: dict[str, Any]
    task: Family
    paper: str
    section: str
    labels: list[LabelInfo]
    flux_unit: str = Field(description="astropy unit of the training flux ('' normalised)")
    normalisation: Normalisation
    grid: WavelengthGrid
    resolution: list[Resolution] = Field(default_factory=list, description="of the "
                                         "training spectra, from the dataset's manifest")
    preprocessing: Preprocessing
    takes: str
    gives: str
    metrics: dict[str, float] = Field(default_factory=dict)
    calibration: UncertaintyCalibration | None = Field(default=None, description="the "
                                                       "uncertainties' validation coverage "
                                                       "and recalibration")
    provenance: ArtifactProvenance


def _dependencies() -> dict[str, str]:
    out = {}
    for pkg in _DEPENDENCIES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def describe(*, model: str, model_args: dict[str, Any], normalisation: Normalisation,
             grid: WavelengthGrid, units: dict[str, str | None], flux_unit: str,
             noise_alpha: float, metrics: dict[str, float], config: dict[str, Any],
             training_data: str | None = None,
             resolution: list[Resolution] | None = None,
             calibration: UncertaintyCalibration | None = None) -> ArtifactMetadata:
    """The metadata of a model trained as described (``units``: label -> unit)."""
    c = card(model)
    norm = normalisation
    return ArtifactMetadata(
        model=model, model_args=model_args, task=c.family, paper=c.paper, section=c.section,
        labels=[LabelInfo(name=n, unit=units.get(n), low=lo, high=hi)
                for n, lo, hi in zip(norm.labels, norm.low, norm.high)],
        flux_unit=flux_unit, normalisation=norm, grid=grid, resolution=resolution or [],
        preprocessing=Preprocessing(
            normalise="continuum" if norm.continuum is not None else c.task.flux_normalise,
            noise_alpha=noise_alpha),
        takes=c.task.takes, gives=c.task.gives,
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
        calibration=calibration,
        provenance=ArtifactProvenance(code_version=code_version(),
                                      python=sys.version.split()[0],
                                      platform=platform.platform(),
                                      dependencies=_dependencies(), config=config,
                                      training_data=training_data))


@dataclass
class Artifact:
    """A loaded artifact: the model in eval mode and its metadata."""

    model: torch.nn.Module
    metadata: ArtifactMetadata
    reference: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]
    artifact_id: str  # "sha256:…" over the files' hashes, from integrity.json
    url: str
    novelty: InputNovelty | None = None  # how unlike the training set an input is

    @property
    def task(self) -> Task:
        return card(self.metadata.model).task

    @property
    def normalisation(self) -> Normalisation:
        return self.metadata.normalisation

    @property
    def grid(self) -> WavelengthGrid:
        return self.metadata.grid

    @property
    def units(self) -> dict[str, str | None]:
        """Label -> unit."""
        return {lab.name: lab.unit for lab in self.metadata.labels}

    def emulate(self, labels: np.ndarray, wavelength: np.ndarray | None = None) -> np.ndarray:
        """An emulator's rest-frame flux (N, L) in the training flux unit for labels (N, K)
        in physical units, on the training grid or (wavelength-query emulators) at
        ``wavelength`` (L,) Å."""
        if "fit" not in self.task.modes:
            raise ModelError(f"a {self.task.family} does not emulate spectra", where=self.url)
        wave = np.array(self.grid.wavelength() if wavelength is None else wavelength,
                        dtype=np.float32)
        device = next(itertools.chain(self.model.parameters(), self.model.buffers())).device
        with torch.no_grad():
            z = self.normalisation.z(np.atleast_2d(labels)).to(device)
            flux = self.task.emulate(self.model, self.normalisation, z,
                                     torch.as_tensor(wave, device=device))
        if flux.shape[-1] != wave.size:
            raise ModelError(f"this emulator gives its {flux.shape[-1]}-pixel training grid "
                             "only; it cannot be evaluated at other wavelengths",
                             where=self.url)
        return flux.cpu().double().numpy()

    def verify(self, rtol: float = 1e-4, atol: float = 1e-5) -> None:
        """Rerun the reference inputs; raise ModelError if any output differs beyond
        tolerance."""
        inputs, outputs = self.reference
        got = self.task.run_reference(self.model, inputs)
        for key, want in outputs.items():
            if not torch.allclose(got[key].cpu(), want, rtol=rtol, atol=atol):
                diff = float((got[key].cpu() - want).abs().max())
                raise ModelError(f"reference output '{key}' differs by up to {diff:.3g} from "
                                 "the one recorded at training time", where=self.url)


def _packed(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous copies, as safetensors stores them."""
    return {k: v.detach().contiguous() for k, v in tensors.items()}


def write_artifact(url: str, *, model: torch.nn.Module, metadata: ArtifactMetadata,
                   reference_inputs: dict[str, torch.Tensor],
                   novelty: InputNovelty | None = None,
                   storage_options: dict | None = None) -> dict[str, Any]:
    """Write an artifact for ``model`` at ``url`` (each file atomically, integrity.json
    last); returns its integrity record."""
    model = model.cpu().eval()
    outputs = card(metadata.model).task.run_reference(model, reference_inputs)
    files = {
        "weights.safetensors": save_tensors(_packed(model.state_dict())),
        "metadata.json": metadata.model_dump_json(indent=1).encode(),
        "reference/inputs.safetensors": save_tensors(_packed(reference_inputs)),
        "reference/outputs.safetensors": save_tensors(_packed(outputs)),
    }
    if novelty is not None:
        files[NOVELTY_FILE] = save_tensors(_packed(novelty.tensors()))
    fs, base = resolve(url, storage_options)
    tree = []
    for name in files:
        write_bytes_atomic(fs, join(base, name), files[name])
        tree.append({"path": name, "sha256": hashlib.sha256(files[name]).hexdigest()})
    artifact_id = hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()
    integrity = {"algorithm": "sha256", "artifact_id": f"sha256:{artifact_id}", "files": tree}
    write_bytes_atomic(fs, join(base, "integrity.json"), json.dumps(integrity, indent=1)
                       .encode())
    return integrity


def package_model(url: str, model: torch.nn.Module, *, model_name: str,
                  model_args: dict[str, Any], batch: dict[str, np.ndarray],
                  labels: list[str], grid: WavelengthGrid, flux_unit: str = "",
                  units: dict[str, str | None] | None = None,
                  metrics: dict[str, float] | None = None,
                  storage_options: dict | None = None) -> str:
    """Store a model made outside ``stellar-ray train`` (in a notebook, or untrained for
    tests and benchmarks) as an artifact at ``url``: the normalisation is fitted to the
    labels (and, where the task needs it, the flux) of ``batch``, a dict of numpy columns
    on ``grid``; reference inputs come from its first rows. Returns ``url``."""
    task = card(model_name).task
    flux = batch.get("model_flux", batch.get("flux")) if task.needs_flux_sample else None
    norm = task.fit_normalisation(labels_of(batch, labels), labels, flux)
    metadata = describe(model=model_name, model_args=model_args, normalisation=norm,
                        grid=grid, units={n: (units or {}).get(n) or default_unit(n)
                                          for n in labels},
                        flux_unit=flux_unit, noise_alpha=0.0, metrics=metrics or {},
                        config={})
    write_artifact(url, model=model, metadata=metadata,
                   reference_inputs=task.reference_inputs(norm, grid.wavelength(), batch),
                   storage_options=storage_options)
    return url


def is_artifact(url: str, storage_options: dict | None = None) -> bool:
    """Whether ``url`` holds a model artifact (its integrity.json), not a dataset."""
    fs, base = resolve(url, storage_options)
    return bool(fs.exists(join(base, "integrity.json")))


def _read_checked(url: str, storage_options: dict | None, only: str | None = None
                  ) -> tuple[dict[str, bytes], str]:
    """Every file of the artifact (or only the file ``only``), each checked against its
    SHA-256; and the artifact id."""
    fs, base = resolve(url, storage_options)
    try:
        integrity = json.loads(read_bytes(fs, join(base, "integrity.json")))
    except FileNotFoundError as err:
        raise ModelError("no model artifact here (missing integrity.json)", where=url) from err
    data = {}
    for entry in integrity["files"]:
        if only is not None and entry["path"] != only:
            continue
        blob = read_bytes(fs, join(base, entry["path"]))
        if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
            raise ChecksumError("file does not match its recorded SHA-256",
                                file=f"{url}/{entry['path']}")
        data[entry["path"]] = blob
    return data, integrity["artifact_id"]


def _metadata(blob: bytes, url: str) -> ArtifactMetadata:
    raw = json.loads(blob)
    found = raw.get("artifact_version")
    if found != ARTIFACT_VERSION:
        made_by = raw.get("provenance", {}).get("code_version", "an unknown version")
        raise ModelError(f"artifact metadata version {found} (made by stellar-ray "
                         f"{made_by}); this stellar-ray reads version {ARTIFACT_VERSION} "
                         "only: retrain the model, or load it with the stellar-ray that "
                         "made it", where=url)
    try:
        return ArtifactMetadata.model_validate(raw)
    except ValidationError as err:
        raise ModelError(f"metadata.json does not describe an artifact: {err}",
                         where=url) from err


def read_metadata(url: str, storage_options: dict | None = None) -> ArtifactMetadata:
    """The artifact's metadata alone (checked against its SHA-256), without its weights."""
    data, _ = _read_checked(url, storage_options, only="metadata.json")
    if "metadata.json" not in data:
        raise ModelError("integrity.json lists no metadata.json", where=url)
    return _metadata(data["metadata.json"], url)


def load_artifact(url: str, storage_options: dict | None = None,
                  device: str | torch.device = "cpu") -> Artifact:
    """Open the artifact at ``url``: check every file's SHA-256 and the metadata version,
    build its model and load the weights (no unpickling), in eval mode on ``device``."""
    data, artifact_id = _read_checked(url, storage_options)
    metadata = _metadata(data["metadata.json"], url)
    model = build(metadata.model, **metadata.model_args)
    model.load_state_dict(load_tensors(data["weights.safetensors"]))
    model.to(device).eval()
    reference = (load_tensors(data["reference/inputs.safetensors"]),
                 load_tensors(data["reference/outputs.safetensors"]))
    novelty = (InputNovelty.from_tensors(load_tensors(data[NOVELTY_FILE]))
               if NOVELTY_FILE in data else None)
    return Artifact(model=model, metadata=metadata, reference=reference,
                    artifact_id=artifact_id, url=url, novelty=novelty)
