"""Datasets in object storage, through moto's S3 server on 127.0.0.1 (endpoint and dummy
credentials from the standard AWS_* environment, set in conftest)."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import s3fs

from stellar_ray.spectra.batch import SpectrumBatch
from stellar_ray.spectra.dataset import DatasetWriter, iter_shards, load_manifest
from stellar_ray.spectra.manifest import MANIFEST_NAME
from stellar_ray.spectra.raydata import read_spectra, write_spectra
from stellar_ray.spectra.storage import redact

from .conftest import make_batch, make_manifest

pytestmark = pytest.mark.timeout(240)


def test_round_trip_through_s3_is_bit_identical(s3_bucket, tmp_path):
    url = f"{s3_bucket}/survey/v1"
    b = make_batch(25)
    with DatasetWriter(url, make_manifest()) as w:
        w.write(b)
    fs = s3fs.S3FileSystem()
    listed = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(url.removeprefix("s3://")))
    m = load_manifest(url)
    assert listed == sorted([MANIFEST_NAME] + [s.path for s in m.shards])
    back = SpectrumBatch.concat(list(iter_shards(url)))
    assert back.flux.tobytes() == b.flux.tobytes()
    assert back.sigma.tobytes() == b.sigma.tobytes()
    assert back.mask.tobytes() == b.mask.tobytes()
    # the same dataset written locally has byte-identical shards
    local = str(tmp_path / "local")
    with DatasetWriter(local, make_manifest()) as w:
        w.write(b)
    for s in m.shards:
        assert fs.cat_file(f"{url}/{s.path}".removeprefix("s3://")) == \
            Path(f"{local}/{s.path}").read_bytes()


def test_ray_reads_and_writes_s3(ray_session, s3_bucket):
    url, out = f"{s3_bucket}/in", f"{s3_bucket}/out"
    b = make_batch(30)
    with DatasetWriter(url, make_manifest()) as w:
        w.write(b)
    ds = read_spectra(url, filter=[("teff", "<", 5500.0)])
    m = write_spectra(ds, out, make_manifest())
    expected = sorted(b.spectrum_id[b.labels["teff"] < 5500.0])
    assert sorted(s for batch in iter_shards(out) for s in batch.spectrum_id) == expected
    assert m.num_rows == len(expected)


def test_cli_reads_s3_with_credentials_from_the_environment(s3_bucket):
    url = f"{s3_bucket}/cli"
    with DatasetWriter(url, make_manifest()) as w:
        w.write(make_batch(5))
    out = subprocess.run([sys.executable, "-m", "stellar_ray.cli", "info", url],
                         capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    assert "5 in 1 shards" in out.stdout
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in out.stdout + out.stderr


def test_missing_credentials_give_a_clear_error(s3_bucket):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"]
    env["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent"
    env["AWS_CONFIG_FILE"] = "/nonexistent"
    out = subprocess.run([sys.executable, "-m", "stellar_ray.cli", "info", f"{s3_bucket}/x"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "credentials" in out.stderr.lower()


def test_redact_hides_secrets():
    opts = {"key": "AKIA", "secret": "s3cr3t", "client_kwargs": {"endpoint_url": "http://x",
                                                               "aws_session_token": "t"}}
    shown = str(redact(opts))
    assert "s3cr3t" not in shown and "AKIA" not in shown and "'t'" not in shown
    assert "http://x" in shown


def _bounce(server, down_s: float) -> threading.Event:
    """Stop the server now and start it again after ``down_s`` seconds; the event is set once
    it is back."""
    server.stop()
    back = threading.Event()

    def later():
        time.sleep(down_s)
        server.start()
        back.set()

    threading.Thread(target=later, daemon=True).start()
    return back


def test_driver_read_survives_a_server_restart(s3_server, s3_bucket):
    url = f"{s3_bucket}/restart-driver"
    b = make_batch(30)
    with DatasetWriter(url, make_manifest()) as w:
        w.write(b)
    seen: list[str] = []
    for i, batch in enumerate(iter_shards(url)):
        if i == 0:
            back = _bounce(s3_server, 3.0)
        seen += list(batch.spectrum_id)
    # the later shards could only be read once the server was back
    assert back.is_set()
    assert sorted(seen) == sorted(b.spectrum_id)


def test_ray_read_survives_a_server_restart(ray_session, s3_server, s3_bucket):
    url = f"{s3_bucket}/restart-ray"
    b = make_batch(60)
    with DatasetWriter(url, make_manifest(rows_per_shard=5)) as w:
        w.write(b)
    ds = read_spectra(url)  # manifest read; the shards are read by Ray tasks below
    back = _bounce(s3_server, 3.0)
    rows = ds.take_all()  # read tasks start while the server is down
    assert back.is_set()
    assert sorted(r["spectrum_id"] for r in rows) == sorted(b.spectrum_id)
    by_id = {r["spectrum_id"]: r["flux"] for r in rows}
    for i, sid in enumerate(b.spectrum_id):
        assert by_id[sid].tobytes() == b.flux[i].tobytes()
