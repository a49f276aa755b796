"""Single spectra fetched from a dataset by id, for the dashboard: the id column of each
shard is read once (a few MB per million spectra), then each request reads only the shard
that holds the id, filtered to its row."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import SpectraError
from ..spectra.batch import SpectrumBatch
from ..spectra.dataset import load_manifest, read_shard
from ..spectra.schema import ID_COLUMN


class SpectrumLookup:
    """The spectra of the dataset at ``url``, by ``spectrum_id``."""

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        self.url = url
        self.storage_options = storage_options
        self.manifest = load_manifest(url, storage_options)
        self._ids: list[pa.ChunkedArray] | None = None
        self._lock = threading.Lock()

    def _shard_ids(self) -> list[pa.ChunkedArray]:
        with self._lock:
            if self._ids is None:
                self._ids = [self._read(r, [ID_COLUMN], None).column(ID_COLUMN)
                             for r in self.manifest.shards]
            return self._ids

    def _read(self, record, columns, filters) -> pa.Table:
        return read_shard(self.url, record, self.manifest, columns=columns, filters=filters,
                          verify=False, storage_options=self.storage_options)

    def label_table(self, names: list[str]) -> pa.Table:
        """The id and the ``names`` label columns of every spectrum (for nearest-label
        searches)."""
        return pa.concat_tables([self._read(r, [ID_COLUMN, *names], None)
                                 for r in self.manifest.shards])

    def spectrum(self, spectrum_id: str) -> dict[str, np.ndarray]:
        """One spectrum as a one-row batch of numpy columns (as Ray Data gives them:
        flux, sigma, mask (1, L), labels and metadata (1,)); raises SpectraError naming
        the dataset when the id is not in it."""
        for record, ids in zip(self.manifest.shards, self._shard_ids()):
            if pc.index(ids, spectrum_id).as_py() >= 0:
                table = self._read(record, None, [(ID_COLUMN, "==", spectrum_id)])
                return SpectrumBatch.from_arrow(table, self.manifest).numpy_rows()
        raise SpectraError(f"no spectrum '{spectrum_id}' in this dataset", file=self.url,
                           field=ID_COLUMN)
