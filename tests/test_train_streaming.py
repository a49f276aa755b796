"""A training set larger than the object store trains by streaming: `stellar-ray train` on a
Ray cluster whose object store is capped below the dataset's size reads the data from
storage every epoch instead of holding it in the store (which Ray would only manage by
spilling or falling back to files on disk), and learns from it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from benchmarks.train_rate import make_data
from stellar_ray.training.history import read_history

from .helpers import free_port

STORE_BYTES = 80 * 2**20
NPIX, ROWS = 4096, 6000  # the flux the Payne trains on alone: 98 MB (float32)


@pytest.fixture
def small_store_cluster():
    """A one-node Ray cluster (2 CPUs) with an 80 MiB object store."""
    port, dashboard = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="sr-os-", dir="/tmp")  # short: Ray's socket paths
    ray = str(Path(sys.executable).parent / "ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = tmp
    proc = subprocess.Popen(
        [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--num-gpus=0", f"--object-store-memory={STORE_BYTES}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats",
         f"--temp-dir={tmp}"],
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
    flux, _ = make_data(data, ROWS, npix=NPIX)  # flux depending on three labels y0..y2
    assert flux.nbytes > 1.15 * STORE_BYTES
    cfg = {"model": "payne", "model_args": {"hidden": [32, 32]},
           "data": {"train": data, "labels": ["y0", "y1", "y2"],
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
