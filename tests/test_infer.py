"""Catalog-scale inference: every spectrum exactly once (also after a killed actor and a
killed driver), corrupt shards reported, uncertainties, the emulator fit, FITS export."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits

from stellar_ray.errors import ConfigError, SpectraError
from stellar_ray.inference.config import InferConfig
from stellar_ray.inference.fit import RV_UNIT_KMS, EmulatorFitter
from stellar_ray.inference.pipeline import infer
from stellar_ray.inference.quality import CatalogFlag
from stellar_ray.models.normalisation import Normalisation, labels_of
from stellar_ray.models.registry import build
from stellar_ray.spectra.catalog import COMMITS_DIR, read_catalog
from stellar_ray.spectra.catalog_fits import catalog_to_fits
from stellar_ray.spectra.dataset import load_manifest

from .helpers import LABELS, TINY, dataset_ids, first_batch
from .helpers import make_artifact as _artifact

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def survey(survey_256):
    return survey_256


def _config(model: str, data: str, to: Path, **kw) -> InferConfig:
    base = {"model": model, "data": data, "to": str(to),
            "actors": {"min_actors": 1, "max_actors": 2, "batch_size": 16}}
    base.update(kw)
    return InferConfig.model_validate(base)


def test_regressor_catalog_has_every_spectrum_once_and_exports_to_fits(survey, tmp_path):
    model = _artifact(survey, tmp_path, "specvit")
    cfg = _config(model, survey, tmp_path / "catalog", noise_redraws=4,
                  carry_columns=["teff"])
    summary = infer(cfg, progress=False)
    assert summary.spectra == summary.new_spectra == 256 and not summary.failed_shards
    table = read_catalog(cfg.to)
    ids = table.column("spectrum_id").to_pylist()
    assert sorted(ids) == dataset_ids(survey) and len(set(ids)) == 256
    err = table.column("teff_err").to_numpy()
    assert np.all(np.isfinite(err)) and np.all(err > 0)
    assert set(table.column("model").to_pylist()) == {"specvit"}
    assert np.allclose(table.column("snr").to_numpy(), 100, rtol=0.05)
    # a second run finds everything done and changes nothing
    again = infer(cfg, progress=False)
    assert again.new_spectra == 0 and again.skipped_shards == 8 and again.spectra == 256
    # FITS export returns the same values, with units
    path = tmp_path / "catalog.fits"
    assert catalog_to_fits(cfg.to, str(path)) == 256
    with fits.open(path) as hdul:
        data = hdul["CATALOG"].data
        assert list(data["spectrum_id"]) == ids
        assert np.array_equal(data["teff"], table.column("teff").to_numpy())
        assert np.array_equal(data["flags"], table.column("flags").to_numpy())
        assert np.array_equal(data["input_teff"], table.column("input_teff").to_numpy())
        columns = hdul["CATALOG"].columns
        assert columns["teff"].unit == "K" and columns["logg_err"].unit == "dex"
        assert columns["flags"].unit is None


def test_cinn_catalog_has_posterior_quantiles(survey, tmp_path):
    model = _artifact(survey, tmp_path, "cinn")
    cfg = _config(model, survey, tmp_path / "catalog", samples=32,
                  quantiles=[0.16, 0.5, 0.84])
    infer(cfg, progress=False)
    table = read_catalog(cfg.to)
    assert table.num_rows == 256
    q16, q50, q84 = (table.column(f"logg_q{q}").to_numpy() for q in (16, 50, 84))
    assert np.all(q16 <= q50) and np.all(q50 <= q84) and np.all(q16 < q84)
    assert np.all(table.column("logg_err").to_numpy() > 0)


def test_a_killed_actor_leaves_every_spectrum_exactly_once(survey, tmp_path):
    model = _artifact(survey, tmp_path, "specvit")
    marker = tmp_path / "killed"
    cfg = _config(model, survey, tmp_path / "catalog", noise_redraws=0,
                  actor_env={"STELLAR_RAY_KILL_ACTOR_AT": f"3:{marker}"})
    summary = infer(cfg, progress=False)
    assert marker.exists()  # an actor process really exited at its third batch
    ids = read_catalog(cfg.to).column("spectrum_id").to_pylist()
    assert sorted(ids) == dataset_ids(survey) and summary.spectra == 256


def test_a_killed_driver_resumes_without_redoing_committed_shards(survey, tmp_path,
                                                                   ray_session):
    model = _artifact(survey, tmp_path, "specvit")
    catalog = tmp_path / "catalog"
    cmd = [sys.executable, "-m", "stellar_ray.cli", "infer", model, survey, "--to",
           str(catalog), "--batch-size", "4", "--max-actors", "1",
           "--address", ray_session.get_runtime_context().gcs_address]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    commits = catalog / COMMITS_DIR
    deadline = time.time() + 240
    while time.time() < deadline and not (commits.exists() and any(commits.iterdir())):
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    first = {p.name: p.read_text() for p in commits.iterdir()}
    assert 1 <= len(first) < 8, "the driver should have died part-way"
    summary = infer(InferConfig(model=model, data=survey, to=str(catalog)), progress=False)
    assert summary.skipped_shards == len(first)
    assert summary.new_spectra == 256 - 32 * len(first)
    for name, text in first.items():  # committed parts were not rewritten
        assert (commits / name).read_text() == text
    ids = read_catalog(str(catalog)).column("spectrum_id").to_pylist()
    assert sorted(ids) == dataset_ids(survey)


def test_a_corrupt_shard_is_reported_and_the_rest_written(survey, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(survey, data)
    shard = load_manifest(str(data)).shards[2].path
    original = (data / shard).read_bytes()
    broken = bytearray(original)
    broken[len(broken) // 2] ^= 0xFF
    (data / shard).write_bytes(bytes(broken))
    model = _artifact(survey, tmp_path, "specvit")
    cfg = _config(model, str(data), tmp_path / "catalog", noise_redraws=0)
    summary = infer(cfg, progress=False)
    assert list(summary.failed_shards) == [shard]
    assert "SHA-256" in summary.failed_shards[shard] or "checksum" in \
        summary.failed_shards[shard]
    assert summary.spectra == 256 - 32
    (data / shard).write_bytes(original)  # repaired: the rerun does only that shard
    again = infer(cfg, progress=False)
    assert again.new_spectra == 32 and not again.failed_shards and again.spectra == 256


def test_bad_requests_are_named(survey, tmp_path):
    emulator = _artifact(survey, tmp_path, "payne")
    with pytest.raises(ConfigError, match="use mode 'fit'"):
        infer(_config(emulator, survey, tmp_path / "c1", mode="predict"), progress=False)
    with pytest.raises(SpectraError, match="carry_columns"):
        infer(_config(emulator, survey, tmp_path / "c2", carry_columns=["colour"]),
              progress=False)
    regressor = _artifact(survey, tmp_path, "specvit")
    infer(_config(regressor, survey, tmp_path / "c3", noise_redraws=0), progress=False)
    with pytest.raises(SpectraError, match="different model"):
        infer(_config(emulator, survey, tmp_path / "c3"), progress=False)


@pytest.fixture(scope="module")
def rough_payne(survey, tmp_path_factory):
    """A Payne roughly trained on the survey's first batch (a rough emulator is enough when
    the truth is what it makes): (artifact URL, that batch, its z-scored labels)."""
    torch.manual_seed(0)
    batch = first_batch(survey)
    flux = torch.as_tensor(np.array(batch["model_flux"]))
    payne = build("payne", n_labels=3, n_pix=flux.shape[1], **TINY["payne"])
    z = Normalisation.of_labels(labels_of(batch, LABELS), LABELS).z(labels_of(batch, LABELS))
    opt = torch.optim.Adam(payne.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        loss = (payne(z) - flux).pow(2).mean()
        loss.backward()
        opt.step()
    return _artifact(survey, tmp_path_factory.mktemp("payne"), "payne", payne), batch, z


def _emulated(fitter: EmulatorFitter, z: torch.Tensor, n: int, sigma: float = 0.01,
              response: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(flux, σ) (n, L): the fitter's own model at the first ``n`` labels, RVs over ±50 km/s
    and broadening softplus(1) = 1.31 km/s, times ``response`` (n, L) if given, plus noise."""
    truth = torch.cat([z[:n], torch.linspace(-0.5, 0.5, n)[:, None],
                       torch.full((n, 1), 1.0)], dim=1)
    with torch.no_grad():
        observed = fitter.observe(truth)
    if response is not None:
        observed = observed * response
    noise = torch.full_like(observed, sigma) * (1.0 if response is None else response)
    return observed + noise * torch.randn(observed.shape), noise


def test_emulator_fit_recovers_labels_and_velocity(survey, rough_payne, tmp_path):
    """Spectra made by the emulator itself at known labels, velocity and broadening are
    fitted back: the fit's machinery, independent of how good the emulator is."""
    model, batch, z = rough_payne
    cfg = _config(model, survey, tmp_path / "catalog",
                  fit={"restarts": 3, "steps": 150, "lr": 0.05, "polish_steps": 5})
    fitter = EmulatorFitter(cfg.model_dump_json())
    n = 12
    torch.manual_seed(1)
    observed, sigma = _emulated(fitter, z, n)
    labels, extra = fitter.estimate(observed, sigma, torch.ones_like(observed, dtype=bool))
    want = labels_of(batch, LABELS)[:n]
    err = np.stack([extra[f"{name}_err"] for name in LABELS], axis=1)
    assert np.all(extra["chi2_reduced"] < 1.5)  # down to the noise: the minimum was found
    # the labels agree with the truth within their errors (a rough emulator leaves some
    # labels nearly degenerate, so their errors are wide, and that is what they must say)
    assert np.all(err > 0) and np.median(np.abs(labels - want) / err) < 1.5
    rv_off = np.abs(extra["rv"] - np.linspace(-0.5, 0.5, n) * RV_UNIT_KMS)
    # within 3 km/s, or 3σ where the rough emulator leaves the velocity loosely constrained
    assert np.all(rv_off < np.maximum(3.0, 3 * extra["rv_err"])), (rv_off, extra["rv_err"])
    # the fit mode end to end through the pool
    summary = infer(cfg.model_copy(update={"fit": cfg.fit.model_copy(update={"steps": 30})}),
                    progress=False)
    table = read_catalog(cfg.to)
    assert summary.spectra == 256 and {"chi2", "rv", "residual_rms"} <= set(table.column_names)
    assert not np.any(table.column("flags").to_numpy() & CatalogFlag.FAILED)
    job = json.loads((tmp_path / "catalog" / "_job.json").read_text())
    assert job["mode"] == "fit"


def test_emulator_fit_with_a_continuum_recovers_labels_of_tilted_spectra(survey, rough_payne,
                                                                         tmp_path):
    """The emulator's spectra times a smooth response (a random quadratic times a
    reddening-like power law, up to ±20 %): fitted with `fit.continuum_degree: 2` the labels
    agree with the truth within their errors and χ² reaches the noise; without continuum
    freedom the fit cannot reach it, and the worst are flagged POOR_FIT."""
    model, batch, z = rough_payne
    fit = {"restarts": 3, "steps": 150, "lr": 0.05, "polish_steps": 5}
    wave = load_manifest(survey).grid.wavelength()
    n = 12
    rng = np.random.default_rng(3)
    x = (wave - wave.mean()) / np.ptp(wave)
    response = torch.as_tensor(np.stack([
        (1 + rng.uniform(-0.2, 0.2) * x + rng.uniform(-0.15, 0.15) * x**2)
        * (wave / wave.mean()) ** rng.uniform(-2.0, 2.0) for _ in range(n)]),
        dtype=torch.float32)
    chi2, pulls = {}, {}
    for degree in (2, None):
        cfg = _config(model, survey, tmp_path / f"catalog-{degree}",
                      fit={**fit, "continuum_degree": degree})
        fitter = EmulatorFitter(cfg.model_dump_json())
        torch.manual_seed(1)
        observed, sigma = _emulated(fitter, z, n, response=response)
        labels, extra = fitter.estimate(observed, sigma,
                                        torch.ones_like(observed, dtype=bool))
        err = np.stack([extra[f"{name}_err"] for name in LABELS], axis=1)
        chi2[degree] = extra["chi2_reduced"]
        pulls[degree] = np.abs(labels - labels_of(batch, LABELS)[:n]) / err
        poor = (extra["_flags"] & CatalogFlag.POOR_FIT) != 0
        np.testing.assert_array_equal(poor, chi2[degree] > cfg.quality.max_chi2_reduced)
    assert np.all(chi2[2] < 1.5), chi2
    assert np.median(pulls[2]) < 1.5, pulls[2]
    assert np.median(chi2[None]) > 3.0, chi2
    assert np.any(chi2[None] > cfg.quality.max_chi2_reduced), chi2  # so some are flagged
