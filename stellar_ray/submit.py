"""``stellar-ray submit``: run a job (simulate, train, tune, infer, hml) on a Ray cluster
through Ray's job submission API, follow its logs and status, and say why it failed if it
did.

The entry point is the same as ``ray job submit --working-dir . -- python -m jobs.<job>
--config <config>``: the project directory (without caches, virtual environments and
outputs) is uploaded as the job's working directory.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ray.job_submission import JobStatus, JobSubmissionClient

JOBS = ("simulate", "train", "tune", "infer", "hml")
#: Not uploaded with the working directory.
EXCLUDES = [".git", ".venv", "venv", "demo-output", "__pycache__", "*.pyc", ".pytest_cache",
            ".ruff_cache", "*.egg-info", "runs"]
#: Log lines that name the cause of a failure, most specific first.
_CAUSES = [
    (re.compile(r"(NoCredentialsError|Unable to locate credentials|credentials? (are |is )?"
                r"(missing|not found|rejected)|InvalidAccessKeyId|AccessDenied|"
                r"SignatureDoesNotMatch)", re.I), "missing or rejected storage credentials"),
    (re.compile(r"(StorageError|DatasetNotFound|SpectraError|ChecksumError)"), "data"),
    (re.compile(r"(ModuleNotFoundError|ImportError)"), "the cluster's Python environment"),
    (re.compile(r"(Error|Exception):"), "the job"),
]


class SubmitError(RuntimeError):
    """The job could not be submitted, or did not succeed; the message says which."""


@dataclass
class JobOutcome:
    job_id: str
    status: str
    seconds: float


def _client(address: str) -> JobSubmissionClient:
    url = address if "://" in address else f"http://{address}"
    try:
        return JobSubmissionClient(url)
    except Exception as err:  # noqa: BLE001 - any failure to connect means the same to users
        kind = type(err).__name__
        raise SubmitError(f"cannot reach a Ray cluster's job server at {url} ({kind}); "
                          "check --address (the dashboard port, usually 8265) and that the "
                          "cluster is up") from None


def failure_cause(logs: str) -> str:
    """The most telling line of a failed job's logs, with what kind of failure it is."""
    lines = [line.strip() for line in logs.splitlines() if line.strip()]
    for pattern, kind in _CAUSES:
        hits = [line for line in lines if pattern.search(line)]
        if hits:
            return f"{kind}: {hits[-1][:400]}"
    return lines[-1][:400] if lines else "no output"


def submit(job: str, config: str, address: str, project: Path = Path("."),
           extra_args: list[str] | None = None, env: dict[str, str] | None = None,
           follow: bool = True, echo: Callable[[str], None] = print,
           timeout_s: float | None = None) -> JobOutcome:
    """Submit ``python -m jobs.<job> --config <config>`` and, with ``follow``, stream its
    logs until it ends. Raises :class:`SubmitError` when it cannot be submitted or fails."""
    if job not in JOBS:
        raise SubmitError(f"unknown job '{job}'; one of {', '.join(JOBS)}")
    if not (project / "jobs" / f"{job}.py").exists():
        raise SubmitError(f"{project.resolve()} has no jobs/{job}.py: run from the project "
                          "directory or give --project")
    if not (project / config).exists():
        raise SubmitError(f"no configuration file {config} under {project.resolve()}")
    client = _client(address)
    entrypoint = " ".join(shlex.quote(a) for a in
                          ["python", "-m", f"jobs.{job}", "--config", config,
                           *(extra_args or [])])
    runtime_env = {"working_dir": str(project.resolve()), "excludes": EXCLUDES}
    if env:
        runtime_env["env_vars"] = env
    started = time.monotonic()
    job_id = _submit_when_ready(client, entrypoint, runtime_env)
    echo(f"submitted {job_id}: {entrypoint}")
    if not follow:
        return JobOutcome(job_id, str(client.get_job_status(job_id)), 0.0)
    try:
        asyncio.run(asyncio.wait_for(_stream(client, job_id, echo), timeout_s))
    except asyncio.TimeoutError:
        client.stop_job(job_id)
        raise SubmitError(f"job {job_id} did not finish within {timeout_s:.0f} s; stopped "
                          "it") from None
    status = _wait(client, job_id)
    seconds = time.monotonic() - started
    if status != JobStatus.SUCCEEDED:
        info = client.get_job_info(job_id)
        cause = failure_cause(client.get_job_logs(job_id)) if status == JobStatus.FAILED \
            else f"the job was {status.value.lower()}"
        raise SubmitError(f"job {job_id} {status.value}: {cause}"
                          + (f" ({info.message})" if info.message and
                             status != JobStatus.FAILED else ""))
    return JobOutcome(job_id, status.value, seconds)


def _submit_when_ready(client: JobSubmissionClient, entrypoint: str, runtime_env: dict,
                       patience_s: float = 60.0) -> str:
    """Submit; a cluster that has just started answers "try again later" until its job
    agent is up, so that answer is retried for a while."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        except RuntimeError as err:
            if "try again" not in str(err) or time.monotonic() > deadline:
                raise SubmitError(f"the cluster refused the job: {err}") from None
            time.sleep(1.0)


async def _stream(client: JobSubmissionClient, job_id: str, echo: Callable[[str], None]
                  ) -> None:
    async for chunk in client.tail_job_logs(job_id):
        for line in chunk.rstrip("\n").splitlines():
            echo(line)


def _wait(client: JobSubmissionClient, job_id: str) -> JobStatus:
    """The job's final status (its log stream has ended, so it is ending)."""
    while not (status := client.get_job_status(job_id)).is_terminal():
        time.sleep(0.5)
    return status
