"""A two-node Ray cluster on 127.0.0.1 (cluster/local/two-node.sh: a head and a second
raylet) taking a small inference job through the Jobs API, as ``stellar-ray submit`` sends
it; and the failure paths: no cluster there, a job that fails, missing storage credentials."""

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
from ray.util.state import list_actors, list_nodes, list_tasks
from typer.testing import CliRunner

from stellar_ray.cli import app
from stellar_ray.spectra.catalog import read_catalog
from stellar_ray.submit import SubmitError, submit

from .helpers import dataset_ids, free_port
from .helpers import make_artifact as _artifact

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def survey(survey_256):
    return survey_256
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """The job server URL of a head + worker cluster, stopped (process group) at the end.
    Its environment has no storage credentials."""
    gcs, dashboard, agent_head, agent_worker = (free_port() for _ in range(4))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(RAY_GCS_PORT=str(gcs), RAY_DASHBOARD_PORT=str(dashboard),
               AGENT_PORT_HEAD=str(agent_head), AGENT_PORT_WORKER=str(agent_worker),
               RAY_BIN=str(Path(sys.executable).parent / "ray"), CPUS_PER_NODE="1",
               # short: Ray's socket paths under it must stay within the 107-byte limit
               RAY_TMPDIR=tempfile.mkdtemp(prefix="sr-2n-", dir="/tmp"),
               AWS_EC2_METADATA_DISABLED="true",
               # as from an activated environment: jobs run `python` from the PATH
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    log = open(tmp_path_factory.mktemp("two-node") / "cluster.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(["bash", str(ROOT / "cluster" / "local" / "two-node.sh"), "run"],
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 120
    while True:
        try:
            if sum(n.state == "ALIVE" for n in list_nodes(address=url)) == 2:
                break
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if time.time() > deadline or proc.poll() is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the two-node cluster did not come up; see {log.name}")
        time.sleep(1)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def _infer_config(tmp_path: Path, data: str, model: str, **extra) -> str:
    cfg = {"model": model, "data": data, "to": str(tmp_path / "catalog"), "noise_redraws": 0,
           "read_cpus": 0.25,
           "actors": {"min_actors": 2, "max_actors": 2, "cpus_per_actor": 0.75,
                      "batch_size": 32}}
    cfg.update(extra)
    path = tmp_path / "infer.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_an_inference_job_on_two_nodes_writes_the_whole_catalog(two_nodes, survey, tmp_path):
    model = _artifact(survey, tmp_path, "specvit")
    config = _infer_config(tmp_path, survey, model)
    lines = []
    outcome = submit("infer", config, two_nodes, project=ROOT, echo=lines.append,
                     timeout_s=300)
    assert outcome.status == "SUCCEEDED"
    assert any("catalog:" in line for line in lines)  # the job's own summary came back
    ids = read_catalog(str(tmp_path / "catalog")).column("spectrum_id").to_pylist()
    assert sorted(ids) == dataset_ids(survey)
    # an actor of 0.75 CPU on each 1-CPU node: the model ran on both
    pools = [a for a in list_actors(address=two_nodes, limit=1000, detail=True)
             if "Predictor" in (a.class_name or "")]
    assert len({a.node_id for a in pools}) == 2
    reads = [t for t in list_tasks(address=two_nodes, limit=10000)
             if "ReadSpectra" in (t.name or "")]
    assert reads


def test_no_cluster_at_the_address_is_named_with_exit_code_1(tmp_path):
    address = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["submit", "infer", "--config",
                                      "jobs/configs/infer-cinn-small.yaml", "--address",
                                      address, "--project", str(ROOT)])
    assert result.exit_code == 1
    assert "cannot reach" in result.output and address in result.output


def test_a_failing_job_is_reported_with_its_cause(two_nodes, survey, tmp_path):
    model = _artifact(survey, tmp_path, "specvit")
    config = _infer_config(tmp_path, str(tmp_path / "no-such-dataset"), model)
    with pytest.raises(SubmitError, match="FAILED: data: .*no-such-dataset"):
        submit("infer", config, two_nodes, project=ROOT, echo=lambda _: None, timeout_s=300)


def test_missing_storage_credentials_are_named(two_nodes, survey, tmp_path):
    model = _artifact(survey, tmp_path, "specvit")
    config = _infer_config(tmp_path, "s3://stellar-ray-private/survey", model)
    result = CliRunner().invoke(app, ["submit", "infer", "--config", config, "--address",
                                      two_nodes, "--project", str(ROOT), "--timeout", "300"])
    assert result.exit_code == 1
    assert "missing or rejected storage credentials" in result.output
    assert "stellar-ray-test-secret" not in result.output  # nothing secret is printed
