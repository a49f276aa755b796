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
    """A Ray Data batch transform keeping the validation rows (``keep=True``) or the others.
    Validation rows are those whose id is in ``ids``, else those true in ``column``, else
    the hash ``fraction``; ``column`` is dropped from the output."""

    fraction: float
    keep: bool
    ids: frozenset[str] | None = None
    column: str | None = None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.ids is not None:
            chosen = np.array([str(i) in self.ids for i in batch["spectrum_id"]], dtype=bool)
        elif self.column is not None:
            chosen = np.asarray(batch[self.column], dtype=bool)
        else:
            chosen = in_validation(batch["spectrum_id"], self.fraction)
        rows = chosen == self.keep
        return {k: v[rows] for k, v in batch.items() if k != self.column}
