"""The errors stellar-ray raises on purpose, under one root.

Each names where the problem is, so that a user can find it without a debugger:
``SpectraError`` the file, row and field of bad data; ``ConfigError`` the configuration file
and the field; ``ModelError`` the model or artifact. ``str(err)`` reads
``"<where>: <reason>"`` with the parts that are known; the command line prints it as one line.
"""

from __future__ import annotations


class StellarRayError(Exception):
    """Root of stellar-ray's own errors: ``where`` (a file, URL or model) and ``reason``."""

    def __init__(self, reason: str, *, where: str | None = None) -> None:
        self.reason = reason
        self.where = where
        super().__init__(self._compose())

    def _parts(self) -> list[str]:
        return [] if self.where is None else [str(self.where)]

    def _compose(self) -> str:
        return ": ".join([*self._parts(), self.reason])


class SpectraError(StellarRayError, ValueError):
    """Bad data: a malformed file, a spectrum that breaks the row rules, a manifest mismatch.

    ``str(err)`` reads ``"<file>: row <row>: field '<field>': <reason>"``."""

    def __init__(self, reason: str, *, file: str | None = None, row: int | None = None,
                 field: str | None = None) -> None:
        self.file, self.row, self.field = file, row, field
        super().__init__(reason, where=file)

    def _parts(self) -> list[str]:
        parts = super()._parts()
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        return parts


class ChecksumError(SpectraError):
    """Bytes that do not match the checksum recorded for them."""


class DatasetNotFound(SpectraError):
    """No manifest at the given URL."""


class StorageError(SpectraError):
    """Storage that cannot be used: no credentials, access denied, or unreachable."""


class ConfigError(StellarRayError, ValueError):
    """A configuration that cannot run: ``where`` is the file (or the section), ``field`` the
    dotted key."""

    def __init__(self, reason: str, *, where: str | None = None,
                 field: str | None = None) -> None:
        self.field = field
        super().__init__(reason, where=where)

    def _parts(self) -> list[str]:
        parts = super()._parts()
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        return parts


class ModelError(StellarRayError, ValueError):
    """A model or artifact that cannot be built, loaded or used this way (``where``: the model
    name or the artifact URL)."""
