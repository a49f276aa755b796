"""Result catalogs: Parquet parts committed atomically, listed in ``_catalog.json``.

A catalog is a table with one row per spectrum (``spectrum_id`` plus result columns). Each
part is written under a temporary name and renamed (one PUT on object stores) and then
recorded by a small commit file ``_commits/<part>.json``; the catalog manifest is rebuilt
from the commit files, so a writer that dies leaves every committed part intact and a
rerun can skip what is done.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ChecksumError, DatasetNotFound, SpectraError
from .dataset import put_table
from .manifest import Provenance
from .schema import ID_COLUMN
from .storage import join, read_bytes, resolve, retrying, write_bytes_atomic

CATALOG_NAME = "_catalog.json"
COMMITS_DIR = "_commits"


class CatalogPart(BaseModel):
    """One committed part: file name under the catalog URL, rows, bytes and SHA-256."""

    model_config = ConfigDict(extra="forbid")

    key: str
    path: str
    rows: int
    bytes: int
    sha256: str


class CatalogManifest(BaseModel):
    """The committed parts of a catalog and the schema they share."""

    model_config = ConfigDict(extra="forbid")

    kind: str = "catalog"
    columns: dict[str, str] = Field(description="column name -> Arrow type")
    parts: list[CatalogPart]
    units: dict[str, str] = Field(default_factory=dict, description="column name -> astropy "
                                  "unit string, for the columns that have one")
    provenance: Provenance | None = None

    @property
    def num_rows(self) -> int:
        return sum(p.rows for p in self.parts)


class CatalogWriter:
    """Commit result tables to the catalog at ``url``, one part per ``key`` (e.g. the input
    shard it came from), exactly once."""

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        self.url = url
        self.storage_options = storage_options

    def committed_keys(self) -> set[str]:
        """Keys whose parts are fully written and committed."""
        return {p.key for p in self._commits()}

    def commit(self, key: str, table: pa.Table) -> CatalogPart:
        """Write ``table`` as the part for ``key``, then its commit record. Committing the same
        key again replaces the part atomically."""
        if ID_COLUMN not in table.column_names:
            raise SpectraError("a catalog part needs a spectrum_id column", field=ID_COLUMN)
        safe = hashlib.sha256(key.encode()).hexdigest()[:24]
        path = f"part-{safe}.parquet"
        nbytes, sha256 = put_table(self.url, path, table, self.storage_options)
        part = CatalogPart(key=key, path=path, rows=table.num_rows, bytes=nbytes, sha256=sha256)
        fs, base = resolve(self.url, self.storage_options)
        write_bytes_atomic(fs, join(base, f"{COMMITS_DIR}/{safe}.json"),
                           part.model_dump_json().encode())
        return part

    def _commits(self) -> list[CatalogPart]:
        fs, base = resolve(self.url, self.storage_options)
        fs.invalidate_cache()
        folder = join(base, COMMITS_DIR)
        if not retrying(lambda: fs.exists(folder), f"stat {folder}"):
            return []
        names = sorted(retrying(lambda: fs.ls(folder, detail=False), f"list {folder}"))
        return [CatalogPart.model_validate_json(read_bytes(fs, n)) for n in names
                if n.endswith(".json")]

    def finalize(self, provenance: Provenance | None = None,
                 units: dict[str, str] | None = None) -> CatalogManifest:
        """Write ``_catalog.json`` listing every committed part (and the columns' ``units``);
        all parts must share a schema and every spectrum_id must occur once."""
        parts = sorted(self._commits(), key=lambda p: p.key)
        schemas = {}
        seen: dict[str, str] = {}
        for part in parts:
            table = read_part(self.url, part, self.storage_options, columns=None)
            schemas[part.key] = table.schema
            for sid in table.column(ID_COLUMN).to_pylist():
                if sid in seen:
                    raise SpectraError(
                        f"duplicate spectrum_id '{sid}' (also in the part for key "
                        f"'{seen[sid]}')", file=f"{self.url}/{part.path}", field=ID_COLUMN)
                seen[sid] = part.key
        schema = next(iter(schemas.values()), pa.schema([(ID_COLUMN, pa.string())]))
        for key, s in schemas.items():
            if not s.equals(schema, check_metadata=False):
                raise SpectraError(f"schema {s} differs from the other parts ({schema})",
                                   file=f"{self.url} part '{key}'")
        columns = {f.name: str(f.type) for f in schema}
        manifest = CatalogManifest(columns=columns, parts=parts, provenance=provenance,
                                   units={k: v for k, v in (units or {}).items()
                                          if k in columns})
        fs, base = resolve(self.url, self.storage_options)
        write_bytes_atomic(fs, join(base, CATALOG_NAME), manifest.model_dump_json(indent=1)
                           .encode())
        return manifest


def read_part(url: str, part: CatalogPart, storage_options: dict | None = None,
              columns: list[str] | None = None) -> pa.Table:
    """One catalog part, its SHA-256 checked."""
    fs, base = resolve(url, storage_options)
    data = read_bytes(fs, join(base, part.path))
    digest = hashlib.sha256(data).hexdigest()
    if digest != part.sha256:
        raise ChecksumError(f"checksum mismatch (SHA-256 {digest[:12]}…, recorded "
                            f"{part.sha256[:12]}…)", file=f"{url}/{part.path}")
    return pq.read_table(pa.BufferReader(data), columns=columns)


def load_catalog_manifest(url: str, storage_options: dict | None = None) -> CatalogManifest:
    fs, base = resolve(url, storage_options)
    try:
        text = read_bytes(fs, join(base, CATALOG_NAME))
    except FileNotFoundError as err:
        raise DatasetNotFound(f"no catalog here (missing {CATALOG_NAME})", file=url) from err
    return CatalogManifest.model_validate(json.loads(text))


def read_catalog(url: str, storage_options: dict | None = None,
                 columns: list[str] | None = None) -> pa.Table:
    """The whole catalog as one Arrow table (parts in key order)."""
    manifest = load_catalog_manifest(url, storage_options)
    tables = [read_part(url, p, storage_options, columns) for p in manifest.parts]
    if not tables:
        return pa.table({ID_COLUMN: pa.array([], pa.string())})
    return pa.concat_tables(tables)


def _commit_block(batch: pa.Table, url: str, storage_options: dict | None) -> pa.Table:
    ids = batch.column(ID_COLUMN)
    key = f"{ids[0].as_py()}..{ids[-1].as_py()}#{batch.num_rows}"
    part = CatalogWriter(url, storage_options).commit(key, batch)
    return pa.table({"key": [part.key]})


def write_catalog(data: ray.data.Dataset | pa.Table | Iterable[pa.Table], url: str, *,
                  storage_options: dict | None = None, rows_per_part: int = 100_000,
                  provenance: Provenance | None = None, **map_args: Any) -> CatalogManifest:
    """Write a result table (an Arrow table, tables, or a Ray dataset) as a catalog."""
    writer = CatalogWriter(url, storage_options)
    if isinstance(data, ray.data.Dataset):
        data.map_batches(_commit_block, fn_kwargs={"url": url,
                                                   "storage_options": storage_options},
                         batch_size=rows_per_part, batch_format="pyarrow",
                         **map_args).take_all()
    else:
        tables = [data] if isinstance(data, pa.Table) else list(data)
        for i, table in enumerate(tables):
            writer.commit(f"{i:06d}", table)
    return writer.finalize(provenance)
