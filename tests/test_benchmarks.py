"""The benchmarks' own plumbing: the GPU script parses and refuses cleanly
on a machine without an NVIDIA GPU; figures judge ratios the right way round."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.figures import Figure, table

ROOT = Path(__file__).resolve().parents[1]
GPU_SH = ROOT / "benchmarks" / "gpu.sh"


def test_the_gpu_benchmark_parses_and_refuses_without_a_gpu():
    # (shellcheck: tests/test_deploy.py checks every script)
    assert subprocess.run(["bash", "-n", str(GPU_SH)]).returncode == 0
    help_text = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--help"], cwd=ROOT,
                               capture_output=True, text=True)
    assert help_text.returncode == 0 and "--actors-per-gpu" in help_text.stdout
    for command in (["bash", str(GPU_SH)], [sys.executable, "-m", "benchmarks.gpu"]):
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, out.stderr
        assert "no NVIDIA GPU" in out.stderr or "no CUDA GPU" in out.stderr


@pytest.mark.parametrize(("value", "lower", "ratio"), [(0.5, True, 4.0), (0.5, False, 0.25)])
def test_figures_are_judged_the_right_way_round(value, lower, ratio):
    figure = Figure("b", "f", value, "s", "target", 2.0, lower)
    assert figure.ratio == pytest.approx(ratio)
    assert f"{ratio:.2f}" in table([figure])
