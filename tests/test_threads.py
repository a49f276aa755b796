"""Torch threads per process: measured once per machine, then the fastest count up to each
process's allotment."""

from __future__ import annotations

import json

import torch

from stellar_ray import threads


def test_the_probe_is_measured_once_and_chooses_within_the_allotment(tmp_path, monkeypatch):
    monkeypatch.setenv("STELLAR_RAY_CACHE", str(tmp_path))
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    rates = threads.measured_rates()
    cpus = max(rates)
    assert sorted(rates) == list(range(1, cpus + 1)) and all(r > 0 for r in rates.values())
    record = next((tmp_path / "threads").glob("*.json"))
    assert json.loads(record.read_text())["gflops"] == {str(t): r for t, r in rates.items()}
    # later processes read the record instead of probing again
    monkeypatch.setattr(threads, "probe", lambda n: (_ for _ in ()).throw(AssertionError))
    assert threads.measured_rates() == rates
    # the choice: the fastest count, never above the allotment (a fraction counts as one)
    faster_on_one = {1: 89.0, 2: 28.0}
    monkeypatch.setattr(threads, "measured_rates", lambda refresh=False: faster_on_one)
    assert threads.best_threads(2) == 1 and threads.best_threads(0.5) == 1
    monkeypatch.setattr(threads, "measured_rates", lambda refresh=False: {1: 60.0, 2: 110.0})
    assert threads.best_threads(2) == 2 and threads.best_threads(1) == 1
    assert threads.best_threads(8) == 2
    before = torch.get_num_threads()
    try:
        assert threads.use_allotted_threads(2) == 2 == torch.get_num_threads()
        monkeypatch.setenv(threads.THREADS_ENV, "1")
        assert threads.use_allotted_threads(2) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
