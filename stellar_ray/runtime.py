"""Connecting to Ray: a local cluster by default, or the one named by ``--address`` /
``RAY_ADDRESS``. Local clusters keep the dashboard on 127.0.0.1."""

from __future__ import annotations

import os

import ray
import torch


def init_ray(address: str | None = None, num_cpus: int | None = None,
             dashboard: bool = True) -> None:
    """Start or join Ray once per process (a second call is a no-op)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard,
             dashboard_host="127.0.0.1", log_to_driver=True)


def pick_device() -> torch.device:
    """The first CUDA device when this process sees one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
