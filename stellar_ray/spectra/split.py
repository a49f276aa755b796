"""The training / validation split: stable, by a hash of the spectrum id.

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
    """A Ray Data batch transform keeping the validation rows (``keep=True``) or the others."""

    fraction: float
    keep: bool

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = in_validation(batch["spectrum_id"], self.fraction) == self.keep
        return {k: v[rows] for k, v in batch.items()}
