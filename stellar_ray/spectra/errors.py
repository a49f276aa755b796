"""Errors raised for bad spectra, shards and datasets.

Every error names where the problem is (file, row, field) so that a user can find
the offending spectrum without a debugger.
"""

from __future__ import annotations


class SpectraError(ValueError):
    """Bad data: a malformed file, a spectrum that breaks the row rules, a manifest mismatch.

    ``str(err)`` reads ``"<file>: row <row>: field '<field>': <reason>"`` with the parts
    that are known.
    """

    def __init__(
        self,
        reason: str,
        *,
        file: str | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.reason = reason
        self.file = file
        self.row = row
        self.field = field
        super().__init__(self._compose())

    def _compose(self) -> str:
        parts = []
        if self.file is not None:
            parts.append(str(self.file))
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        parts.append(self.reason)
        return ": ".join(parts)


class ChecksumError(SpectraError):
    """A shard whose bytes do not match the checksum recorded in the manifest."""


class DatasetNotFound(SpectraError):
    """No manifest at the given URL."""


class StorageError(SpectraError):
    """Storage that cannot be used: no credentials, access denied, or unreachable."""
