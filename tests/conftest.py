"""Shared fixtures: a local Ray cluster, an S3-compatible server on 127.0.0.1, and small
spectrum batches.

The environment is set here, before Ray starts, so that Ray's workers inherit it: quiet
Ray settings from shared/reference/ray-notes.md, and the standard AWS variables pointing
at the test S3 server (dummy credentials that exist only for that server).
"""

from __future__ import annotations

import os
import socket
import tempfile

_TMP = tempfile.mkdtemp(prefix="stellar-ray-tests-")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


S3_PORT = _free_port()
os.environ.update({
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_TMPDIR": os.path.join(_TMP, "ray"),
    "RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S": "120",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "OMP_NUM_THREADS": "1",
    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
    "AWS_ACCESS_KEY_ID": "stellar-ray-test",
    "AWS_SECRET_ACCESS_KEY": "stellar-ray-test-secret",
    "STELLAR_RAY_STORAGE_RETRY_S": "60",
})
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("RAY_ADDRESS", None)
os.makedirs(os.environ["RAY_TMPDIR"], exist_ok=True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from stellar_ray.spectra.batch import SpectrumBatch  # noqa: E402
from stellar_ray.spectra.grid import ArmGrid, WavelengthGrid  # noqa: E402
from stellar_ray.spectra.manifest import LabelSpec, Manifest, Provenance  # noqa: E402

from .s3server import S3Server  # noqa: E402


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray cluster of 2 CPUs for the whole test session."""
    import ray

    # The dashboard serves the State API, which Ray Train's placement-group cleaner needs to
    # free the workers of a killed trial (PBT) and the Jobs API; bound to this machine only.
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
             object_store_memory=512 * 1024**2, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (state kept across restarts, like a real server)."""
    server = S3Server("127.0.0.1", S3_PORT)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket; returns its s3:// URL."""
    import s3fs

    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    fs = s3fs.S3FileSystem()
    fs.mkdir(name)
    yield f"s3://{name}"


def make_manifest(npix: int = 64, rows_per_shard: int = 10, labels=("teff", "logg"),
                  **extra) -> Manifest:
    grid = WavelengthGrid(arms=[ArmGrid(name="a", kind="linear", start=5000.0, step=0.5,
                                        npix=npix)])
    return Manifest(grid=grid, flux_unit="", labels=[LabelSpec(name=n) for n in labels],
                    rows_per_shard=rows_per_shard,
                    provenance=Provenance(producer="tests", code_version="test"), **extra)


def make_batch(n: int = 25, npix: int = 64, seed: int = 0, prefix: str = "s") -> SpectrumBatch:
    """``n`` random but valid spectra with labels and S/N metadata."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((n, npix), np.uint8)
    mask[:, :2] = 1  # NO_DATA at the blue edge
    flux = rng.normal(1.0, 0.05, (n, npix)).astype(np.float32)
    sigma = np.full((n, npix), 0.05, np.float32)
    flux[:, :2], sigma[:, :2] = 0.0, np.inf
    return SpectrumBatch(
        spectrum_id=np.array([f"{prefix}{i:05d}" for i in range(n)], dtype=object),
        flux=flux, sigma=sigma, mask=mask,
        labels={"teff": rng.uniform(4000, 7000, n), "logg": rng.uniform(0, 5, n)},
        metadata={"snr": rng.uniform(5, 100, n).astype(np.float32),
                  "survey": np.array(["test"] * n, dtype=object),
                  "ra": rng.uniform(0, 360, n)},
    )


@pytest.fixture
def tmp_url(tmp_path):
    return str(tmp_path / "ds")


@pytest.fixture(scope="module")
def survey_256(ray_session, tmp_path_factory):
    """A simulated survey of 256 spectra in 8 shards (the helpers' SURVEY)."""
    from stellar_ray.simulation.survey import SimulationConfig, simulate

    from .helpers import SURVEY

    url = str(tmp_path_factory.mktemp("survey-256") / "survey")
    simulate(SimulationConfig.model_validate({**SURVEY, "n_spectra": 256, "rows_per_shard": 32}),
             url, progress=False)
    return url
