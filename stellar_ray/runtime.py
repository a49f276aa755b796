"""Connecting to Ray: a local cluster by default, or the one named by ``--address`` /
``RAY_ADDRESS``; and where Ray's own logs go.

A local cluster is this process's own: its GCS listens on a port chosen here and every
process of the cluster is told that address (``RAY_ADDRESS`` in the job's environment), so
that two stellar-ray commands on one machine each run their own cluster and Ray's internal
clients (Ray Train's placement-group cleaner asks the State API) never see the other's.
The dashboard (the State and Jobs APIs) listens on 127.0.0.1 only. Unless ``verbose``, the
workers' output and Ray's INFO logs stay in Ray's log folder (:func:`ray_log_dir`).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

import ray

if TYPE_CHECKING:
    import torch

_VERBOSE = {"on": False}


def set_verbose(on: bool) -> None:
    """Show Ray's own logs and the workers' output in this process's terminal."""
    _VERBOSE["on"] = on


def verbose() -> bool:
    return _VERBOSE["on"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _quiet() -> None:
    """Our own progress lines and summaries replace Ray Data's bars and start-up logs; the
    notice that token authentication is on (it stays on) is not repeated at every start."""
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # its notice that the bars we turned off are off
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def init_ray(address: str | None = None, num_cpus: int | None = None,
             dashboard: bool = True) -> None:
    """Start or join Ray once per process (a second call is a no-op)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    loud = verbose()
    quiet = {"log_to_driver": loud,
             "logging_level": logging.INFO if loud else logging.WARNING}
    if not loud:
        _quiet()
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **quiet)
        return
    gcs_port = free_port()
    os.environ["RAY_GCS_SERVER_PORT"] = str(gcs_port)  # read by the GCS this init starts
    try:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard,
                 dashboard_host="127.0.0.1", dashboard_port=free_port() if dashboard else None,
                 runtime_env={"env_vars": {"RAY_ADDRESS": f"127.0.0.1:{gcs_port}"}}, **quiet)
    finally:
        del os.environ["RAY_GCS_SERVER_PORT"]


def ray_log_dir() -> str | None:
    """The folder of Ray's logs for this session (None before Ray runs or when it cannot
    be told)."""
    node = getattr(ray._private.worker, "_global_node", None)  # no public accessor in 2.60
    try:
        return node.get_logs_dir_path() if node is not None else None
    except AttributeError:
        return None


def pick_device() -> torch.device:
    """The first CUDA device when this process sees one, else the CPU."""
    import torch  # here: starting Ray for data work should not import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
