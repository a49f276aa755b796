"""The training / validation split: stable, by a hash of the spectrum id, or chosen by a
list of ids or a boolean column.

Its own light module because Ray Data workers unpickle :class:`ValidationRows`: importing it
must not import torch or the models (seconds per worker process on a small machine).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np


def in_validation(ids: np.ndarray, fraction: float) -> np.ndarray:
    """(B,) bool: whether each spectrum id falls into the validation ``fraction``
    (CRC-32 of the id, so the split is the same on every machine and run)."""
    return np.array([zlib.crc32(str(i).encode()) % 10_000 < fraction * 10_000 for i in ids],
                    dtype=bool)


@dataclass(frozen=True)
class ValidationRows:
    """A Ray Data batch transform keeping the validation rows (``keep=True``) or the
    training rows. Validation rows are those whose id is in ``ids``, else those true in
    ``column``, else the hash ``fraction``; training rows are those true in
    ``train_column`` if given, else the rest, each repeated ``repeat_column`` times if
    given. The split's columns are dropped from the output."""

    fraction: float
    keep: bool
    ids: frozenset[str] | None = None
    column: str | None = None
    train_column: str | None = None
    repeat_column: str | None = None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.ids is not None:
            chosen = np.array([str(i) in self.ids for i in batch["spectrum_id"]], dtype=bool)
        elif self.column is not None:
            chosen = np.asarray(batch[self.column], dtype=bool)
        else:
            chosen = in_validation(batch["spectrum_id"], self.fraction)
        if self.keep:
            rows = np.flatnonzero(chosen)
        else:
            trains = np.asarray(batch[self.train_column], dtype=bool) \
                if self.train_column is not None else ~chosen
            rows = np.flatnonzero(trains)
            if self.repeat_column is not None:
                copies = np.asarray(batch[self.repeat_column], dtype=np.int64)[rows]
                rows = np.repeat(rows, np.maximum(copies, 0))
        dropped = {self.column, self.train_column, self.repeat_column}
        return {k: v[rows] for k, v in batch.items() if k not in dropped}
