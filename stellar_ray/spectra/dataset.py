"""Writing and reading the shards of a spectrum dataset (pyarrow + fsspec, no Ray).

A shard is serialised in memory, hashed, and written atomically
(:func:`~stellar_ray.spectra.storage.write_bytes_atomic`); the manifest naming the complete
shards is written last. Reading checks the manifest, each shard's SHA-256 and schema.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import ChecksumError, DatasetNotFound, SpectraError
from .batch import SpectrumBatch, check_batch
from .manifest import MANIFEST_NAME, Manifest, ShardRecord
from .storage import join, read_bytes, resolve, retrying, write_bytes_atomic

#: Parquet settings for shards: zstd keeps masks and labels small; row groups of this many
#: spectra give predicate pushdown a useful granularity.
PARQUET_COMPRESSION = "zstd"
ROW_GROUP_ROWS = 1024

#: DNF filters as in ``pyarrow.parquet``: [(col, op, value), ...] (AND) or a list of such
#: lists (OR of ANDs).
Filters = Sequence[tuple[str, str, Any]] | Sequence[Sequence[tuple[str, str, Any]]]


@dataclass(frozen=True)
class WrittenShard:
    """A shard just written: its manifest record and the spectrum ids it holds."""

    record: ShardRecord
    ids: np.ndarray


def shard_bytes(table: pa.Table) -> bytes:
    """Serialise a shard table to Parquet bytes."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION,
                   row_group_size=ROW_GROUP_ROWS, write_statistics=True)
    return sink.getvalue().to_pybytes()


def put_table(url: str, name: str, table: pa.Table, storage_options: dict | None = None
              ) -> tuple[int, str]:
    """Write ``table`` as Parquet file ``name`` under ``url`` atomically; return its size in
    bytes and SHA-256 hex digest."""
    data = shard_bytes(table)
    fs, base = resolve(url, storage_options)
    write_bytes_atomic(fs, join(base, name), data)
    return len(data), hashlib.sha256(data).hexdigest()


def column_stats(table: pa.Table, manifest: Manifest) -> dict[str, tuple[float, float]]:
    """Min and max of every numeric label and metadata column with a non-null value."""
    out = {}
    for f in manifest.arrow_schema():
        if f.name in table.column_names and (
            pa.types.is_floating(f.type) or pa.types.is_integer(f.type)
        ):
            col = table.column(f.name)
            if pa.types.is_floating(f.type):
                col = pc.if_else(pc.is_nan(col), None, col)
            mm = pc.min_max(col)
            if mm["min"].is_valid:
                out[f.name] = (float(mm["min"].as_py()), float(mm["max"].as_py()))
    return out


def write_shard(url: str, name: str, batch: SpectrumBatch, manifest: Manifest,
                storage_options: dict | None = None) -> WrittenShard:
    """Check ``batch`` against the row rules and write it as shard ``name`` under ``url``."""
    check_batch(batch, manifest, source=f"{url}/{name}")
    table = batch.to_arrow(manifest)
    nbytes, sha256 = put_table(url, name, table, storage_options)
    record = ShardRecord(path=name, rows=table.num_rows, bytes=nbytes, sha256=sha256,
                         stats=column_stats(table, manifest))
    return WrittenShard(record=record, ids=batch.spectrum_id)


def check_unique_ids(shards: Iterable[WrittenShard]) -> None:
    """Raise naming both places if any spectrum_id occurs twice across ``shards``."""
    seen: dict[str, tuple[str, int]] = {}
    for shard in shards:
        for row, sid in enumerate(shard.ids):
            where = seen.setdefault(str(sid), (shard.record.path, row))
            if where != (shard.record.path, row):
                raise SpectraError(
                    f"duplicate spectrum_id '{sid}' (also in {where[0]} row {where[1]})",
                    file=shard.record.path, row=row, field="spectrum_id",
                )


def commit_manifest(url: str, manifest: Manifest, storage_options: dict | None = None) -> None:
    """Write the manifest atomically; from this moment readers see the listed shards."""
    fs, base = resolve(url, storage_options)
    write_bytes_atomic(fs, join(base, MANIFEST_NAME), manifest.to_json().encode())


def load_manifest(url: str, storage_options: dict | None = None) -> Manifest:
    """The manifest of the dataset at ``url``."""
    fs, base = resolve(url, storage_options)
    path = join(base, MANIFEST_NAME)
    try:
        text = read_bytes(fs, path)
    except FileNotFoundError as err:
        raise DatasetNotFound(f"no dataset here (missing {MANIFEST_NAME})", file=url) from err
    return Manifest.from_json(text, source=f"{url}/{MANIFEST_NAME}")


def dataset_exists(url: str, storage_options: dict | None = None) -> bool:
    fs, base = resolve(url, storage_options)
    fs.invalidate_cache()
    return retrying(lambda: fs.exists(join(base, MANIFEST_NAME)), f"stat {url}")


def delete_dataset(url: str, storage_options: dict | None = None) -> None:
    """Remove a dataset: the manifest first (so readers stop seeing it), then its shards."""
    manifest = load_manifest(url, storage_options)
    fs, base = resolve(url, storage_options)
    fs.rm_file(join(base, MANIFEST_NAME))
    shards = [join(base, s.path) for s in manifest.shards]
    present = [p for p in shards if fs.exists(p)]
    if present:
        fs.rm(present)


def read_shard(
    url: str,
    record: ShardRecord,
    manifest: Manifest,
    *,
    columns: Sequence[str] | None = None,
    filters: Filters | None = None,
    verify: bool = True,
    storage_options: dict | None = None,
) -> pa.Table:
    """One shard as an Arrow table, checked against the manifest.

    With ``verify`` the whole file is read once and its SHA-256 compared with the
    manifest; without, only the requested column chunks are fetched.
    """
    fs, base = resolve(url, storage_options)
    path = join(base, record.path)
    where = f"{url}/{record.path}"
    try:
        if verify:
            data = read_bytes(fs, path)
            digest = hashlib.sha256(data).hexdigest()
            if len(data) != record.bytes or digest != record.sha256:
                raise ChecksumError(
                    f"checksum mismatch: {len(data)} bytes with SHA-256 {digest[:12]}…, the "
                    f"manifest records {record.bytes} bytes with {record.sha256[:12]}… "
                    "(corrupt or truncated shard)", file=where)
            source: Any = pa.BufferReader(data)
        else:
            source = retrying(lambda: fs.open(path, "rb"), f"open {path}")
        file_schema = pq.read_schema(source)
        _check_schema(file_schema, manifest, where, columns)
        table = pq.read_table(source, columns=list(columns) if columns else None,
                              filters=filters)
    except FileNotFoundError as err:
        raise SpectraError("shard listed in the manifest is missing", file=where) from err
    except (pa.ArrowInvalid, OSError) as err:
        raise SpectraError(f"not a readable Parquet shard ({err})", file=where) from err
    if filters is None and table.num_rows != record.rows:
        raise SpectraError(f"{table.num_rows} rows, the manifest records {record.rows}",
                           file=where)
    return table


def _check_schema(schema: pa.Schema, manifest: Manifest, where: str,
                  columns: Sequence[str] | None) -> None:
    expected = manifest.arrow_schema()
    for name in columns or expected.names:
        if name not in schema.names:
            raise SpectraError("column missing from the shard", file=where, field=name)
    for f in schema:
        if f.name not in expected.names:
            raise SpectraError("column not in the dataset schema", file=where, field=f.name)
        want = expected.field(f.name).type
        if not f.type.equals(want):
            raise SpectraError(f"type {f.type}, the manifest says {want}", file=where,
                               field=f.name)


def shard_may_match(record: ShardRecord, filters: Filters | None) -> bool:
    """False only if the shard's min/max statistics prove no row can pass ``filters``."""
    if not filters:
        return True
    disjuncts = [filters] if isinstance(filters[0], tuple) else filters
    return any(all(_may_pass(record.stats, p) for p in conj) for conj in disjuncts)


def _may_pass(stats: dict[str, tuple[float, float]], predicate: tuple[str, str, Any]) -> bool:
    col, op, value = predicate
    if col not in stats:
        return True
    lo, hi = stats[col]
    try:
        if op == ">":
            return hi > value
        if op == ">=":
            return hi >= value
        if op == "<":
            return lo < value
        if op == "<=":
            return lo <= value
        if op in ("=", "=="):
            return lo <= value <= hi
        if op == "in":
            return any(lo <= v <= hi for v in value)
    except TypeError:
        return True
    return True


def iter_shards(url: str, storage_options: dict | None = None, **read_args: Any
                ) -> Iterable[SpectrumBatch]:
    """Every shard of a dataset as a :class:`SpectrumBatch`, in manifest order (driver-side,
    for small datasets and tests; use :func:`~stellar_ray.spectra.raydata.read_spectra` at
    scale)."""
    manifest = load_manifest(url, storage_options)
    for record in manifest.shards:
        if shard_may_match(record, read_args.get("filters")):
            table = read_shard(url, record, manifest, storage_options=storage_options,
                               **read_args)
            yield SpectrumBatch.from_arrow(table, manifest)


class DatasetWriter:
    """Write a dataset from the driver: buffer batches into shards of
    ``manifest.rows_per_shard`` rows and commit the manifest on :meth:`close`.

    Use as a context manager; an exception inside the block leaves no manifest, so the
    partial dataset stays invisible.
    """

    def __init__(self, url: str, manifest: Manifest, storage_options: dict | None = None,
                 overwrite: bool = False) -> None:
        if manifest.shards:
            raise ValueError("the manifest for a new dataset must list no shards")
        if dataset_exists(url, storage_options):
            if not overwrite:
                raise SpectraError("a dataset already exists here (pass overwrite=True to "
                                   "replace it)", file=url)
            delete_dataset(url, storage_options)
        self.url = url
        self.manifest = manifest
        self.storage_options = storage_options
        self._pending: list[SpectrumBatch] = []
        self._pending_rows = 0
        self._written: list[WrittenShard] = []

    def write(self, batch: SpectrumBatch) -> None:
        """Queue ``batch``; full shards are written (and checked) as they fill."""
        self._pending.append(batch)
        self._pending_rows += len(batch)
        while self._pending_rows >= self.manifest.rows_per_shard:
            self._flush(self.manifest.rows_per_shard)

    def _flush(self, rows: int) -> None:
        merged = SpectrumBatch.concat(self._pending)
        head = merged.take(np.arange(rows))
        name = f"part-{len(self._written):06d}.parquet"
        self._written.append(write_shard(self.url, name, head, self.manifest,
                                         self.storage_options))
        rest = merged.take(np.arange(rows, len(merged)))
        self._pending = [rest] if len(rest) else []
        self._pending_rows = len(rest)

    def close(self) -> Manifest:
        """Write the last partial shard, check ids are unique, commit the manifest."""
        if self._pending_rows:
            self._flush(self._pending_rows)
        check_unique_ids(self._written)
        manifest = self.manifest.model_copy(
            update={"shards": [w.record for w in self._written]})
        commit_manifest(self.url, manifest, self.storage_options)
        return manifest

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def validate_dataset(url: str, storage_options: dict | None = None) -> Manifest:
    """Check a whole dataset: manifest, every shard's checksum and schema, the row rules and
    unique spectrum ids. Returns the manifest; raises :class:`SpectraError` at the first
    problem."""
    manifest = load_manifest(url, storage_options)
    shards = []
    for record in manifest.shards:
        table = read_shard(url, record, manifest, storage_options=storage_options)
        batch = SpectrumBatch.from_arrow(table, manifest)
        check_batch(batch, manifest, source=f"{url}/{record.path}")
        shards.append(WrittenShard(record=record, ids=batch.spectrum_id))
    check_unique_ids(shards)
    return manifest
