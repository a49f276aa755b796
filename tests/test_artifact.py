"""The artifact as a contract: typed metadata with units, every hash checked, an unknown
metadata version refused by name, the emulator's spectra through the public API, and each
task's warm start (SM-Net's baseline at the training median)."""

import hashlib
import json

import numpy as np
import pytest
import torch

import stellar_ray as sr
from stellar_ray.artifact import ARTIFACT_VERSION, read_metadata
from stellar_ray.errors import ChecksumError, ModelError
from stellar_ray.models import build, card

from .conftest import make_batch, make_manifest

LABELS = ["teff", "logg"]


def _columns(n: int = 16, npix: int = 64) -> dict[str, np.ndarray]:
    b = make_batch(n, npix)
    return {"flux": b.flux, "sigma": b.sigma, **b.labels}


def _package(tmp_path, name: str) -> str:
    grid = make_manifest(npix=64).grid
    sizes = {k: v for k, v in card(name).tiny.items() if k not in ("n_labels", "n_pix")}
    full = card(name).task.model_args(sizes, len(LABELS), 64)  # as stellar-ray train does
    torch.manual_seed(0)
    return sr.package_model(str(tmp_path / name), build(name, **full), model_name=name,
                            model_args=full, batch=_columns(), labels=LABELS, grid=grid,
                            units={"teff": "K"})


def test_metadata_is_typed_with_units_and_the_reference_reruns(tmp_path):
    url = _package(tmp_path, "specvit")
    art = sr.load_artifact(url)
    meta = art.metadata
    assert meta.artifact_version == ARTIFACT_VERSION and meta.task == "regressor"
    assert art.units == {"teff": "K", "logg": "dex"}  # given, else the shared default
    assert [lab.name for lab in meta.labels] == LABELS
    assert meta.labels[0].low < meta.labels[0].high
    assert meta.preprocessing.normalise == "median" and art.grid.npix == 64
    art.verify()
    flux = torch.as_tensor(_columns()["flux"][:3])
    labels, extra = art.task.predict(art.model, art.normalisation, flux,
                                     torch.full_like(flux, 0.05), samples=8,
                                     quantiles=[0.5], noise_redraws=3,
                                     generator=torch.Generator().manual_seed(0))
    assert labels.shape == (3, 2) and extra["teff_err"].shape == (3,)
    assert np.all(extra["teff_err"] > 0)


def test_a_changed_file_and_an_unknown_version_are_refused(tmp_path):
    url = _package(tmp_path, "payne")
    # the metadata alone (the dashboard's way to pick an inference mode) is the full load's
    assert read_metadata(url) == sr.load_artifact(url).metadata
    meta_path = tmp_path / "payne" / "metadata.json"
    original = meta_path.read_bytes()
    meta_path.write_bytes(original.replace(b'"payne"', b'"bigpayne"'))
    for load in (sr.load_artifact, read_metadata):
        with pytest.raises(ChecksumError, match="metadata.json"):
            load(url)
    # a consistent artifact of another metadata version: hashes rewritten to match
    meta = json.loads(original)
    meta["artifact_version"] = ARTIFACT_VERSION + 1
    meta_path.write_bytes(json.dumps(meta).encode())
    integrity_path = tmp_path / "payne" / "integrity.json"
    integrity = json.loads(integrity_path.read_text())
    for entry in integrity["files"]:
        entry["sha256"] = hashlib.sha256((tmp_path / "payne" / entry["path"])
                                         .read_bytes()).hexdigest()
    integrity_path.write_text(json.dumps(integrity))
    for load in (sr.load_artifact, read_metadata):
        with pytest.raises(ModelError, match=f"metadata version {ARTIFACT_VERSION + 1}.*"
                           f"reads version {ARTIFACT_VERSION}"):
            load(url)


def test_an_emulator_gives_its_spectra_in_physical_units(tmp_path):
    art = sr.load_artifact(_package(tmp_path, "payne"))
    labels = np.array([[5000.0, 4.0], [6000.0, 2.0]])
    flux = art.emulate(labels)
    z = art.normalisation.z(labels)
    with torch.no_grad():
        direct = art.model(z).double().numpy() * art.normalisation.flux_scale
    assert flux.shape == (2, 64) and np.allclose(flux, direct, rtol=1e-6)
    with pytest.raises(ModelError, match="does not emulate"):
        sr.load_artifact(_package(tmp_path, "specvit")).emulate(labels)


def test_a_wavelength_query_emulator_is_evaluated_where_asked(tmp_path):
    art = sr.load_artifact(_package(tmp_path, "transformer_payne"))
    art.verify()
    wave = np.linspace(5001.0, 5020.0, 7)  # not the training grid
    assert art.emulate(np.array([[5000.0, 4.0]]), wavelength=wave).shape == (1, 7)


def test_smnet_starts_its_baseline_at_the_training_median():
    task = card("smnet").task
    flux = np.random.default_rng(0).uniform(0.2, 1.0, (32, 64))
    norm = task.fit_normalisation(np.ones((32, 2)), LABELS, flux)
    warm = task.warm_start(norm, flux)
    model = build("smnet", **card("smnet").tiny | {"n_labels": 2})
    task.init_model(model, warm)
    start = torch.nn.functional.softplus(model.baseline, beta=model.beta)
    median = task.encode(torch.as_tensor(flux, dtype=torch.float32), norm).median(0).values
    assert torch.allclose(start, median, atol=1e-4)
    assert card("payne").task.warm_start(norm, flux) is None
