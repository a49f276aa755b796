"""``stellar-ray`` as a user runs it: two trainings started at once on one machine (each with
its own local Ray) both finish; a run prints one line per epoch and no Ray reports; errors
are one line that names the file and the field."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.timeout(600)


def _cli(*args: str, cwd) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen([sys.executable, "-m", "stellar_ray.cli", *args], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _train_yaml(tmp_path, survey: str, name: str) -> str:
    cfg = {"model": "specvit", "model_args": {"d": 16, "heads": 2, "layers": 1},
           "data": {"train": survey, "labels": ["teff", "logg"], "validation_fraction": 0.2},
           "optim": {"epochs": 2, "batch_size": 32, "validate_every": 1},
           "scaling": {"num_workers": 1, "cpus_per_worker": 0.5},
           "output": str(tmp_path / "runs"), "name": name}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_two_trainings_at_once_both_finish_quietly(survey_256, tmp_path):
    runs = [_cli("train", _train_yaml(tmp_path, survey_256, f"run{i}"), cwd=tmp_path)
            for i in range(2)]
    outputs = [p.communicate(timeout=540) for p in runs]
    for (out, err), p in zip(outputs, runs):
        assert p.returncode == 0, err[-3000:]
        lines = out.splitlines()
        epochs = [line for line in lines if line.startswith("epoch ")]
        assert [line.split()[1] for line in epochs] == ["1/2", "2/2"], out
        assert all("val " in line and "teff MAE" in line for line in epochs)
        assert "TrainingReport" not in out + err and "Reporting training result" not in err
        assert any(line.startswith("Ray's logs: ") for line in lines)
    for i in range(2):
        assert (tmp_path / "runs" / f"run{i}" / "artifact" / "integrity.json").exists()


def test_errors_are_one_line_naming_the_file_and_field(survey_256, tmp_path):
    missing = _cli("train", str(tmp_path / "nowhere.yaml"), cwd=tmp_path)
    _, err = missing.communicate(timeout=120)
    assert missing.returncode == 2 and len(err.strip().splitlines()) == 1
    assert "nowhere.yaml" in err and "cannot read" in err
    bad = tmp_path / "bad.yaml"
    cfg = yaml.safe_load(Path(_train_yaml(tmp_path, survey_256, "bad")).read_text())
    cfg["optim"]["epochs"] = 0
    bad.write_text(yaml.safe_dump(cfg))
    run = _cli("train", str(bad), cwd=tmp_path)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 2 and len(err.strip().splitlines()) == 1
    assert "bad.yaml" in err and "field 'optim.epochs'" in err
