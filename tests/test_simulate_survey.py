"""Distributed survey generation: determinism across worker counts, resumption, CLI."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from stellar_ray.simulation.survey import SimulationConfig, simulate
from stellar_ray.spectra.batch import SpectrumBatch
from stellar_ray.spectra.dataset import iter_shards, validate_dataset
from stellar_ray.spectra.shard_job import PROGRESS_DIR

from .helpers import make_instrument

pytestmark = pytest.mark.timeout(300)

SMALL = {
    "instrument": make_instrument(6150.0, 0.1, 2001, 8000.0),
    "n_spectra": 30,
    "rows_per_shard": 8,
    "seed": 7,
    "snr": {"kind": "loguniform", "low": 20, "high": 100},
}


def test_same_seed_gives_identical_shards_whatever_the_workers(ray_session, tmp_path):
    config = SimulationConfig.model_validate(SMALL)
    one = simulate(config, str(tmp_path / "one"), progress=False, num_cpus_per_task=2.0)
    many = simulate(config, str(tmp_path / "many"), progress=False, num_cpus_per_task=0.5)
    assert [s.sha256 for s in one.shards] == [s.sha256 for s in many.shards]
    assert [s.rows for s in one.shards] == [8, 8, 8, 6]
    validate_dataset(str(tmp_path / "one"))
    batch = SpectrumBatch.concat(list(iter_shards(str(tmp_path / "one"))))
    assert len(set(batch.spectrum_id)) == 30
    assert batch.model_flux is not None and batch.model_flux.shape == batch.flux.shape
    assert np.all((batch.metadata["snr"] >= 20) & (batch.metadata["snr"] <= 100))
    assert set(batch.metadata["mode"]) == {"TEST"}
    assert np.isfinite(batch.labels["teff"]).all()
    other = SimulationConfig.model_validate({**SMALL, "seed": 8})
    different = simulate(other, str(tmp_path / "other"), progress=False)
    assert different.shards[0].sha256 != one.shards[0].sha256


def test_rerun_skips_complete_shards(ray_session, tmp_path):
    url = tmp_path / "ds"
    config = SimulationConfig.model_validate(SMALL)
    first = simulate(config, str(url), progress=False)
    # a driver that died before the manifest: progress records for 2 of 4 shards remain
    (url / "_manifest.json").unlink()
    for k in (2, 3):
        (url / PROGRESS_DIR / f"part-{k:06d}.json").unlink()
        (url / f"part-{k:06d}.parquet").unlink()
    kept = {k: (url / f"part-{k:06d}.parquet").stat().st_mtime_ns for k in (0, 1)}
    second = simulate(config, str(url), progress=False)
    assert {k: (url / f"part-{k:06d}.parquet").stat().st_mtime_ns for k in (0, 1)} == kept
    assert [s.sha256 for s in second.shards] == [s.sha256 for s in first.shards]
    # a rerun of a finished survey does nothing; a different one is refused
    assert simulate(config, str(url), progress=False).shards == second.shards
    other = SimulationConfig.model_validate({**SMALL, "n_spectra": 12})
    with pytest.raises(ValueError, match="different dataset exists"):
        simulate(other, str(url), progress=False)


def test_noiseless_library(ray_session, tmp_path):
    config = SimulationConfig.model_validate({**SMALL, "noise": False, "n_spectra": 5})
    m = simulate(config, str(tmp_path / "lib"), progress=False)
    assert m.uncertainties == "none" and not m.model_flux
    batch = next(iter(iter_shards(str(tmp_path / "lib"))))
    assert np.all(batch.sigma == 0) and np.all(batch.mask == 0)


def test_cli_simulate_and_bad_config(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({**SMALL, "n_spectra": 6}))
    out = subprocess.run([sys.executable, "-m", "stellar_ray.cli", "simulate", str(good),
                          "--to", str(tmp_path / "ds")], capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr
    assert "simulated 6 TEST spectra in 1 shards" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SMALL, "snr": {"kind": "fixed", "value": -5}}))
    out = subprocess.run([sys.executable, "-m", "stellar_ray.cli", "simulate", str(bad),
                          "--to", str(tmp_path / "never")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "snr.value: S/N must be > 0" in out.stderr
    assert not Path(tmp_path / "never").exists()


def test_example_configs_load():
    root = Path(__file__).resolve().parents[1] / "jobs" / "configs"
    configs = {p.name: SimulationConfig.from_yaml(p) for p in root.glob("simulate-*.yaml")}
    assert {"simulate-lrs-small.yaml", "simulate-hrs-small.yaml",
            "simulate-lrs-production.yaml", "simulate-hrs-production.yaml"} <= set(configs)
    assert configs["simulate-lrs-production.yaml"].n_spectra >= 1_000_000
