"""``stellar-ray label DATASET --from FILE --to NEW``: a new dataset with the labels of a
catalog joined onto an existing one by id (the old dataset is left untouched).

Catalog values replace a label's value for the spectra the catalog lists (a null in the
catalog makes a null); spectra it does not list keep their values. One Ray task per shard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ray

from ...errors import SpectraError
from ...quantities import default_unit
from ...runtime import init_ray
from ...version import code_version
from ..batch import SpectrumBatch
from ..dataset import (
    commit_manifest,
    dataset_exists,
    delete_dataset,
    load_manifest,
    read_shard,
    write_shard,
)
from ..manifest import LabelSpec, Manifest, Provenance, ShardRecord
from .ids import compile_id_pattern
from .label_catalog import LabelCatalog, LabelCatalogOptions, read_label_catalog


@dataclass
class LabelSummary:
    """What a relabelling did: spectra with and without a catalog row, catalog rows unused."""

    url: str
    spectra: int
    matched: int
    unmatched: int
    catalog_unused: int
    labels: list[str]


def _relabel_shard(source: str, to: str, record: ShardRecord, old: Manifest, new: Manifest,
                   catalog: LabelCatalog, id_pattern: str | None,
                   storage_options: dict | None) -> tuple[ShardRecord, list[str]]:
    """Ray task body: one shard with the catalog's labels, written under the same name."""
    pattern = compile_id_pattern(id_pattern)
    batch = SpectrumBatch.from_arrow(
        read_shard(source, record, old, storage_options=storage_options), old)
    labels = {n: np.full(len(batch), np.nan) for n in new.label_names}
    for name, values in (batch.labels or {}).items():
        labels[name] = np.asarray(values, dtype=np.float64).copy()
    matched = []
    for i, sid in enumerate(batch.spectrum_id):
        found = catalog.lookup(str(sid), pattern)
        if found is None:
            continue
        key, row = found
        for name, value in catalog.labels_of(row).items():
            labels[name][i] = value
        matched.append(key)
    batch.labels = labels
    return write_shard(to, record.path, batch, new, storage_options).record, matched


def label_dataset(source: str, catalog: LabelCatalogOptions, to: str, *,
                  id_pattern: str | None = None, overwrite: bool = False,
                  storage_options: dict | None = None, address: str | None = None
                  ) -> LabelSummary:
    """Join ``catalog`` onto the dataset at ``source`` (ids cut by ``id_pattern`` for the
    match) into a new dataset at ``to``."""
    if source.rstrip("/") == to.rstrip("/"):
        raise SpectraError("--to must differ from the dataset: the old one stays untouched",
                           file=to)
    compile_id_pattern(id_pattern)
    old = load_manifest(source, storage_options)
    if dataset_exists(to, storage_options):
        if not overwrite:
            raise SpectraError("a dataset already exists here (use --overwrite)", file=to)
        delete_dataset(to, storage_options)
    table = read_label_catalog(catalog, storage_options)
    specs = {lab.name: lab for lab in old.labels}
    for name, unit in table.units.items():
        specs[name] = LabelSpec(name=name, unit=unit or default_unit(name))
    new = old.model_copy(update={
        "labels": list(specs.values()), "shards": [],
        "provenance": Provenance(
            producer="stellar-ray label",
            config={"source": source, "catalog": catalog.model_dump(mode="json"),
                    "id_pattern": id_pattern},
            code_version=code_version())})
    Manifest.model_validate(new.model_dump())  # label names must not clash with columns
    init_ray(address)
    task = ray.remote(_relabel_shard)
    table_ref = ray.put(table)
    refs = [task.remote(source, to, rec, old, new, table_ref, id_pattern, storage_options)
            for rec in old.shards]
    results = ray.get(refs)
    committed = new.model_copy(update={"shards": [r for r, _ in results]})
    commit_manifest(to, committed, storage_options)
    matched = [k for _, keys in results for k in keys]
    return LabelSummary(url=to, spectra=committed.num_rows, matched=len(matched),
                        unmatched=committed.num_rows - len(matched),
                        catalog_unused=len(set(table.index) - set(matched)),
                        labels=list(table.units))
