"""A training set larger than the object store trains by streaming: `stellar-ray train` on a
Ray cluster whose object store is capped below the dataset's size, with spilling and
fallback allocation off, so that holding the dataset in the store could not succeed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from stellar_ray.spectra.batch import SpectrumBatch
from stellar_ray.spectra.dataset import DatasetWriter
from stellar_ray.spectra.grid import ArmGrid, WavelengthGrid
from stellar_ray.spectra.manifest import LabelSpec, Manifest, Provenance
from stellar_ray.training.history import read_history

from .helpers import free_port

STORE_BYTES = 80 * 2**20
NPIX, ROWS = 4096, 6000  # the flux the Payne trains on alone: 98 MB (float32)


def _dataset(url: str) -> int:
    """Spectra whose flux depends on three labels; returns the bytes of their flux."""
    rng = np.random.default_rng(0)
    labels = rng.normal(size=(ROWS, 3))
    flux = (1.0 + 0.1 * np.tanh(labels @ rng.normal(size=(3, NPIX)))
            + 0.01 * rng.normal(size=(ROWS, NPIX))).astype(np.float32)
    grid = WavelengthGrid(arms=[ArmGrid(name="a", kind="linear", start=5000.0, step=0.25,
                                        npix=NPIX)])
    manifest = Manifest(grid=grid, flux_unit="", rows_per_shard=300,
                        labels=[LabelSpec(name=n) for n in ("teff", "logg", "fe_h")],
                        provenance=Provenance(producer="test", code_version="test"))
    with DatasetWriter(url, manifest) as w:
        w.write(SpectrumBatch(spectrum_id=[f"s{i}" for i in range(ROWS)], flux=flux,
                              sigma=np.full_like(flux, 0.01),
                              mask=np.zeros(flux.shape, np.uint8),
                              labels={"teff": 5000 + 500 * labels[:, 0],
                                      "logg": 3 + labels[:, 1], "fe_h": labels[:, 2] / 3}))
    return ROWS * NPIX * 4


@pytest.fixture
def small_store_cluster():
    """A one-node Ray cluster (2 CPUs) with an 80 MiB object store, neither spilling nor
    falling back to files when it is full."""
    port, dashboard = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="sr-os-", dir="/tmp")  # short: Ray's socket paths
    ray = str(Path(sys.executable).parent / "ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = tmp
    env["RAY_plasma_unlimited"] = "0"  # no fallback allocation on disk either
    proc = subprocess.Popen(
        [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--num-gpus=0", f"--object-store-memory={STORE_BYTES}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats",
         f"--temp-dir={tmp}",
         "--system-config=" + json.dumps({"automatic_object_spilling_enabled": False})],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while subprocess.run([ray, "health-check", f"--address=127.0.0.1:{port}"], env=env,
                         capture_output=True).returncode != 0:
        assert time.time() < deadline and proc.poll() is None, "the Ray head did not start"
        time.sleep(0.5)
    yield f"127.0.0.1:{port}", env
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    shutil.rmtree(tmp, ignore_errors=True)


def test_a_dataset_larger_than_the_object_store_trains_streaming(small_store_cluster,
                                                                  tmp_path):
    address, env = small_store_cluster
    data = str(tmp_path / "data")
    assert _dataset(data) > 1.15 * STORE_BYTES
    cfg = {"model": "payne", "model_args": {"hidden": [32, 32]},
           "data": {"train": data, "labels": ["teff", "logg", "fe_h"],
                    "validation_fraction": 0.1, "cache_bytes": 0},
           "optim": {"epochs": 2, "batch_size": 256, "validate_every": 1},
           "scaling": {"num_workers": 1, "cpus_per_worker": 0.5},
           "output": str(tmp_path / "runs"), "name": "streamed"}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = subprocess.run([sys.executable, "-m", "stellar_ray.cli", "train", str(path),
                          "--address", address], env=env, capture_output=True, text=True,
                         timeout=400)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "the training set streams from storage every epoch" in run.stdout
    history = read_history(str(tmp_path / "runs" / "streamed"))
    assert [int(m["epoch"]) for m in history] == [0, 1]
    # the loss falls: the spectra were really read and learned from
    assert history[1]["val_loss"] < history[0]["val_loss"]
