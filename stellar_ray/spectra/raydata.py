"""Spectrum datasets as Ray Data datasets.

:func:`read_spectra` reads a dataset with one read task per shard, verifying checksums,
projecting columns and pushing filters down (whole shards are skipped from the manifest's
statistics; row groups from Parquet's). Batches come out with ``flux``, ``sigma`` and
``mask`` as (B, L) numpy arrays. :func:`write_spectra` writes a Ray dataset of rows back
as shards and commits the manifest.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

from ..errors import SpectraError
from .batch import SpectrumBatch
from .dataset import (
    Filters,
    WrittenShard,
    check_unique_ids,
    commit_manifest,
    dataset_exists,
    delete_dataset,
    load_manifest,
    read_shard,
    shard_may_match,
    write_shard,
)
from .manifest import Manifest, ShardRecord
from .schema import ID_COLUMN

#: Column naming the shard a row came from (added on request, for per-shard commits).
SOURCE_COLUMN = "_shard"

log = logging.getLogger(__name__)


def _read_shards(url: str, records: list[ShardRecord], manifest: Manifest,
                 columns: list[str] | None, filters: Filters | None, verify: bool,
                 storage_options: dict | None, block_rows: int, tag_source: bool,
                 skip_bad: bool) -> Iterator[pa.Table]:
    """Read task body: each shard, cut into zero-copy slices of at most ``block_rows``."""
    for r in records:
        try:
            table = read_shard(url, r, manifest, columns=columns, filters=filters,
                               verify=verify, storage_options=storage_options)
        except (SpectraError, OSError, pa.ArrowException) as err:
            if not skip_bad:
                raise
            log.error("skipping shard %s/%s: %s", url, r.path, err)
            continue
        if tag_source:
            table = table.append_column(SOURCE_COLUMN, pa.array([r.path] * table.num_rows,
                                                                pa.string()))
        for start in range(0, max(table.num_rows, 1), block_rows):
            yield table.slice(start, block_rows)


class SpectraDatasource(Datasource):
    """A Ray Data source over the shards of one spectrum dataset.

    ``shards``: read only these shard paths; ``tag_source``: add :data:`SOURCE_COLUMN`;
    ``skip_bad``: log and skip a shard that cannot be read or fails its checks instead of
    failing the whole read (the caller sees which shards gave no rows)."""

    def __init__(self, url: str, manifest: Manifest, columns: list[str] | None = None,
                 filters: Filters | None = None, verify: bool = True,
                 storage_options: dict | None = None, shards: Sequence[str] | None = None,
                 tag_source: bool = False, skip_bad: bool = False) -> None:
        super().__init__()
        self.url = url
        self.manifest = manifest
        self.columns = columns
        self.filters = filters
        self.verify = verify
        self.storage_options = storage_options
        self.tag_source = tag_source
        self.skip_bad = skip_bad
        wanted = None if shards is None else set(shards)
        self.records = [r for r in manifest.shards if shard_may_match(r, filters)
                        and (wanted is None or r.path in wanted)]

    def get_name(self) -> str:
        return "ReadSpectra"

    def _bytes_per_row(self) -> int:
        schema = self.manifest.arrow_schema()
        names = self.columns or schema.names
        npix = self.manifest.npix
        per_col = {"flux": 4 * npix, "sigma": 4 * npix, "mask": npix, "model_flux": 4 * npix}
        return sum(per_col.get(n, 16) for n in names)

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(r.rows for r in self.records) * self._bytes_per_row()

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        if not self.records:
            return []
        groups = np.array_split(np.arange(len(self.records)),
                                min(max(parallelism, 1), len(self.records)))
        context = data_context or ray.data.DataContext.get_current()
        block_rows = max(1, (context.target_max_block_size or 2**27) // 2
                         // self._bytes_per_row())
        tasks = []
        for idx in groups:
            records = [self.records[i] for i in idx]
            rows = sum(r.rows for r in records)
            meta = BlockMetadata(
                num_rows=None if self.filters else rows,
                size_bytes=int(rows * self._bytes_per_row()),
                exec_stats=None,
                input_files=[f"{self.url}/{r.path}" for r in records],
            )
            read_fn = functools.partial(
                _read_shards, self.url, records, self.manifest, self.columns, self.filters,
                self.verify, self.storage_options, block_rows, self.tag_source, self.skip_bad)
            tasks.append(ReadTask(read_fn, meta, per_task_row_limit=per_task_row_limit))
        return tasks


def read_spectra(
    url: str,
    columns: Sequence[str] | None = None,
    filter: Filters | None = None,  # noqa: A002 - the public name users expect
    *,
    verify: bool = True,
    storage_options: dict | None = None,
    shards: Sequence[str] | None = None,
    tag_source: bool = False,
    skip_bad: bool = False,
    **read_args: Any,
) -> ray.data.Dataset:
    """A Ray dataset of the spectra at ``url``.

    ``columns``: the columns to read (``spectrum_id`` is always included); ``filter``: DNF
    predicates on scalar columns, e.g. ``[("snr", ">", 20)]``; ``verify``: check each
    shard's SHA-256 (reads whole shards; without it only the requested columns are
    fetched); ``shards``, ``tag_source``, ``skip_bad``: see :class:`SpectraDatasource`.
    ``read_args`` go to :func:`ray.data.read_datasource` (e.g. ``num_cpus=0.5``).
    """
    manifest = load_manifest(url, storage_options)
    known = manifest.arrow_schema().names
    filter_columns = [p[0] for p in _predicates(filter)]
    for name in [*(columns or []), *filter_columns]:
        if name not in known:
            raise SpectraError(f"no such column; the dataset has {known}", file=url, field=name)
    cols = None
    if columns is not None:
        cols = [ID_COLUMN] + [c for c in columns if c != ID_COLUMN]
    source = SpectraDatasource(url, manifest, cols, filter, verify, storage_options, shards,
                               tag_source, skip_bad)
    # One read task per shard; without this Ray asks for ~200 blocks and splits each shard
    # into many small blocks, which costs more than it gains for shards of this size.
    read_args.setdefault("override_num_blocks", max(1, len(source.records)))
    ds = ray.data.read_datasource(source, **read_args)
    # Ray Data's per-operator reservation holds back half of the CPUs for operators to
    # come; a read alone then runs about one task at a time on a 2-CPU node (0.33 of a raw
    # pyarrow read per core measured by benchmarks.io_read, 0.59 without it). With actors
    # downstream the inference rate is the same either way (measured), so reads never
    # reserve.
    ds.context.op_resource_reservation_enabled = False
    return ds


def _predicates(filters: Filters | None) -> list[tuple[str, str, Any]]:
    if not filters:
        return []
    return list(filters) if isinstance(filters[0], tuple) else [p for c in filters for p in c]


def _write_block(batch: pa.Table, url: str, manifest: Manifest,
                 storage_options: dict | None) -> pa.Table:
    """Map function: write one batch of rows as a shard named by its content."""
    spectra = SpectrumBatch.from_arrow(batch, manifest)
    first, last = str(spectra.spectrum_id[0]), str(spectra.spectrum_id[-1])
    key = hashlib.sha256(f"{first}\0{last}\0{len(spectra)}".encode()).hexdigest()[:20]
    written = write_shard(url, f"part-{key}.parquet", spectra, manifest, storage_options)
    return pa.table({
        "record": [written.record.model_dump_json()],
        "ids": [list(map(str, written.ids))],
    })


def write_spectra(ds: ray.data.Dataset, url: str, manifest: Manifest, *,
                  storage_options: dict | None = None, overwrite: bool = False) -> Manifest:
    """Write a Ray dataset of spectrum rows (the row schema of ``manifest``) to ``url``.

    Each Ray task writes whole shards of up to ``manifest.rows_per_shard`` rows; the driver
    checks that ids are unique across shards and commits the manifest last.
    """
    if dataset_exists(url, storage_options):
        if not overwrite:
            raise SpectraError("a dataset already exists here (pass overwrite=True)", file=url)
        delete_dataset(url, storage_options)
    results = ds.map_batches(
        _write_block,
        fn_kwargs={"url": url, "manifest": manifest, "storage_options": storage_options},
        batch_size=manifest.rows_per_shard,
        batch_format="pyarrow",
        zero_copy_batch=True,
    ).take_all()
    written = [
        WrittenShard(record=ShardRecord.model_validate(json.loads(r["record"])),
                     ids=np.asarray(r["ids"], dtype=object))
        for r in results
    ]
    written.sort(key=lambda w: w.record.path)
    check_unique_ids(written)
    committed = manifest.model_copy(update={"shards": [w.record for w in written]})
    commit_manifest(url, committed, storage_options)
    return committed
