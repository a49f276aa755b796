"""URLs to filesystems: every location in stellar-ray is a URL resolved through fsspec.

``/path``, ``file:///path``, ``s3://bucket/prefix``, ``gs://bucket/prefix`` (with the
``gcs`` extra) and any other fsspec protocol. S3 endpoint and credentials come from the
standard AWS environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, profiles, instance
roles) or from ``storage_options``; they are never printed or logged.
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..errors import StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds to keep retrying a storage call that failed on the network before giving up.
DEFAULT_RETRY_DEADLINE_S = float(os.environ.get("STELLAR_RAY_STORAGE_RETRY_S", "120"))

_SECRET_KEYS = ("secret", "key", "token", "password", "credential")


def redact(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of storage options fit for logs: values of credential-like keys hidden."""
    out: dict[str, Any] = {}
    for k, v in (options or {}).items():
        if isinstance(v, Mapping):
            out[k] = redact(v)
        elif any(s in k.lower() for s in _SECRET_KEYS) and "endpoint" not in k.lower():
            out[k] = "***"
        else:
            out[k] = v
    return out


def resolve(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """URL -> (fsspec filesystem, path within it) with no trailing slash."""
    options = dict(storage_options or {})
    try:
        fs, path = fsspec.core.url_to_fs(str(url), **options)
    except ImportError as err:
        protocol = str(url).split("://", 1)[0]
        hint = " (pip install 'stellar-ray[gcs]')" if protocol in ("gs", "gcs") else ""
        raise ValueError(f"no filesystem for '{protocol}://' URLs{hint}: {err}") from err
    return fs, path.rstrip("/") or path


def join(base: str, name: str) -> str:
    """``base/name`` for a filesystem path returned by :func:`resolve`."""
    return f"{base.rstrip('/')}/{name}"


def is_local(fs: Any) -> bool:
    return isinstance(fs, LocalFileSystem)


def write_bytes_atomic(fs: Any, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing or all of it.

    Local disk: a temporary name in the same directory, then an atomic rename. Object
    stores: one PUT, which becomes visible only when complete.
    """
    parent = path.rsplit("/", 1)[0]
    if is_local(fs):
        fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{path.rsplit('/', 1)[-1]}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    retrying(lambda: fs.pipe_file(path, data), f"write {path}")


def _transient(err: BaseException) -> bool:
    """Network trouble worth retrying: refused or reset connections, timeouts, 5xx."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return False
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    names = {c.__name__ for c in type(err).__mro__}
    if names & {
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "ClientConnectorError",
        "ClientOSError",
        "ServerDisconnectedError",
        "ClientPayloadError",
        "IncompleteRead",
        "FSTimeoutError",
        "ResponseStreamingError",
    }:
        return True
    text = str(err)
    return isinstance(err, OSError) and any(
        s in text for s in ("Connection", "connect", "Service Unavailable", "SlowDown", "503")
    )


_CREDENTIAL_ERRORS = {"NoCredentialsError", "PartialCredentialsError", "InvalidAccessKeyId",
                      "SignatureDoesNotMatch", "ExpiredToken", "DefaultCredentialsError"}


def _explain(err: BaseException, what: str) -> StorageError | None:
    """A StorageError that tells the user what to fix, for credential and access failures."""
    names = {c.__name__ for c in type(err).__mro__}
    text = str(err)
    if names & _CREDENTIAL_ERRORS or any(n in text for n in _CREDENTIAL_ERRORS):
        return StorageError(
            f"no usable credentials to {what} ({type(err).__name__}); set AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or pass credentials in storage_options")
    if isinstance(err, PermissionError) or "AccessDenied" in text:
        return StorageError(f"access denied when trying to {what}")
    return None


def retrying(
    call: Callable[[], T], what: str, deadline_s: float = DEFAULT_RETRY_DEADLINE_S
) -> T:
    """Run ``call``, retrying transient network errors with jittered exponential backoff
    until ``deadline_s`` seconds have passed; credential and access failures become a
    :class:`StorageError`; other errors propagate at once."""
    start = time.monotonic()
    delay = 0.2
    while True:
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - filtered by _transient
            explained = _explain(err, what)
            if explained is not None:
                raise explained from err
            if not _transient(err):
                raise
            if time.monotonic() - start > deadline_s:
                raise StorageError(f"cannot {what}: storage unreachable for "
                                   f"{deadline_s:.0f} s ({type(err).__name__})") from err
            log.warning("storage: %s failed (%s); retrying in %.1f s", what,
                        type(err).__name__, delay)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)


def read_bytes(fs: Any, path: str) -> bytes:
    """The whole object at ``path``, retrying transient network errors."""
    return retrying(lambda: fs.cat_file(path), f"read {path}")
