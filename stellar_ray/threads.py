"""Torch threads per process: as many as the process was allotted, unless fewer run faster on
this machine.

More threads are not always faster: on an AMD EPYC 2-vCPU box a 256×1024 @ 1024×1024 fp32
matrix multiply ran at 89 GFLOP/s on one thread and 28 on two. So the count is measured,
not assumed: a one-time probe times that multiply at every thread count up to the CPU count
and stores the rates in the cache (``$STELLAR_RAY_CACHE``, keyed by CPU model, CPU count and
torch version); every actor, training worker and computing CLI process then runs at the
count, up to its allotment, with the best rate. ``STELLAR_RAY_THREADS=N`` skips the probe
and uses N (at most the allotment).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

import torch

from .simulation.package_files import cache_dir, cache_lock

THREADS_ENV = "STELLAR_RAY_THREADS"
#: The probe's multiply: (rows, inner, columns), fp32.
PROBE_SHAPE = (256, 1024, 1024)
PROBE_REPEATS = 7


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe(max_threads: int) -> dict[int, float]:
    """GFLOP/s of the probe multiply at 1..``max_threads`` threads (best of
    :data:`PROBE_REPEATS` each); the process's thread count is restored afterwards."""
    m, k, n = PROBE_SHAPE
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
    before = torch.get_num_threads()
    rates = {}
    try:
        for threads in range(1, max_threads + 1):
            torch.set_num_threads(threads)
            torch.mm(a, b)  # warm up the pool at this size
            best = float("inf")
            for _ in range(PROBE_REPEATS):
                start = time.perf_counter()
                torch.mm(a, b)
                best = min(best, time.perf_counter() - start)
            rates[threads] = 2 * m * k * n / best / 1e9
    finally:
        torch.set_num_threads(before)
    return rates


def _record_path() -> Path:
    key = f"{_cpu_model()}|{os.cpu_count()}|{torch.__version__}"
    return cache_dir() / "threads" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def measured_rates(refresh: bool = False) -> dict[int, float]:
    """The probe's rates on this machine: from the cache, else probed once (under a file
    lock, so that processes starting together do not probe over each other)."""
    path = _record_path()
    with cache_lock(path.parent):
        if path.exists() and not refresh:
            return {int(t): r for t, r in json.loads(path.read_text())["gflops"].items()}
        rates = probe(os.cpu_count() or 1)
        record = {"cpu": _cpu_model(), "cpus": os.cpu_count(), "torch": torch.__version__,
                  "shape": PROBE_SHAPE, "gflops": rates}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)
        return rates


def best_threads(allotted: float) -> int:
    """The thread count for a process allotted ``allotted`` CPUs (a fraction counts as one):
    the fastest measured count up to it."""
    cap = max(1, int(allotted))
    forced = os.environ.get(THREADS_ENV)
    if forced:
        return max(1, min(cap, int(forced)))
    rates = measured_rates()
    usable = {t: r for t, r in rates.items() if t <= cap} or {1: 0.0}
    return max(usable, key=lambda t: (usable[t], -t))


def use_allotted_threads(allotted: float) -> int:
    """Set this process's torch threads for an allotment of ``allotted`` CPUs; returns the
    count."""
    threads = best_threads(allotted)
    torch.set_num_threads(threads)
    return threads
