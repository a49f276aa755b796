"""The commit record of an unfinished ingestion, so that a killed run resumes.

Under ``<dataset>/_ingest/`` the driver writes ``plan.json`` (a fingerprint of the input
files and options) before any work, and each task writes ``chunk-<n>.json`` after its
shards: the shards' records, their spectrum ids and what it set aside. A rerun with the
same plan skips the recorded chunks and redoes the rest (their shard names are fixed, so
half-written shards of a killed task are simply replaced). The directory goes once the
manifest is committed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from ...errors import SpectraError
from ..manifest import ShardRecord
from ..storage import join, read_bytes, resolve, write_bytes_atomic
from .raw import Reject

RECORD_DIR = "_ingest"


class ChunkRecord(BaseModel):
    """What one ingestion task finished: its shards and everything the summary needs."""

    model_config = ConfigDict(extra="forbid")

    chunk: int
    shards: list[ShardRecord]
    ids: list[str]
    sources: list[str]
    rejects: list[dict]
    dropped_labels: int = 0
    assumed_medium: list[str] = []
    resolutions: list[tuple[float | None, float | None, str]] = []
    matched: list[str] = []
    collision: tuple[str, str, str] | None = None  # (id, first file, second file)

    def reject_objects(self) -> list[Reject]:
        return [Reject(**r) for r in self.rejects]


def plan_fingerprint(files: Sequence[str], options_json: dict) -> str:
    """SHA-256 of the input files (in order) and the options that shape the output."""
    text = json.dumps({"files": list(files), "options": options_json}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class IngestRecords:
    """Reading and writing the commit records of the ingestion into ``url``."""

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        self.url = url
        self.storage_options = storage_options
        self.fs, base = resolve(url, storage_options)
        self.base = join(base, RECORD_DIR)

    def plan(self) -> str | None:
        try:
            return json.loads(read_bytes(self.fs, join(self.base, "plan.json")))["plan"]
        except FileNotFoundError:
            return None

    def start(self, plan: str) -> None:
        write_bytes_atomic(self.fs, join(self.base, "plan.json"),
                           json.dumps({"plan": plan}).encode())

    def write(self, record: ChunkRecord) -> None:
        write_bytes_atomic(self.fs, join(self.base, f"chunk-{record.chunk:06d}.json"),
                           record.model_dump_json().encode())

    def finished(self) -> dict[int, ChunkRecord]:
        """The records of the chunks already done, by chunk number."""
        self.fs.invalidate_cache()
        if not self.fs.exists(self.base):
            return {}
        out = {}
        for path in sorted(self.fs.glob(join(self.base, "chunk-*.json"))):
            try:
                record = ChunkRecord.model_validate_json(read_bytes(self.fs, path))
            except ValueError as err:
                raise SpectraError(f"unreadable ingest record ({err}); rerun with --overwrite",
                                   file=path) from err
            out[record.chunk] = record
        return out

    def clear_records(self) -> None:
        """Remove the records of a run whose manifest is committed."""
        self.fs.invalidate_cache()
        if self.fs.exists(self.base):
            self.fs.rm(self.base, recursive=True)

    def clear(self) -> None:
        """Forget the unfinished run: its records, every shard it wrote and the temporary
        files of writers that were killed."""
        self.fs.invalidate_cache()
        _, base = resolve(self.url, self.storage_options)
        shards = [p for pattern in ("part-*.parquet", ".tmp-*")
                  for p in self.fs.glob(join(base, pattern))]
        if shards:
            self.fs.rm(shards)
        self.clear_records()
