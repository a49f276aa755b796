"""A worker's shard of a stored dataset held in its memory: read from storage once, then
shuffled and cut into batches every epoch without Ray Data's per-epoch streaming (which
costs about a second per epoch however small the data)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

FLUX_COLUMNS = ("flux", "sigma", "model_flux")


def shard_bytes(rows: int, npix: int, flux_columns: int, world: int) -> int:
    """Bytes a worker holds for its share of ``rows`` spectra of ``npix`` float32 pixels in
    ``flux_columns`` per-pixel columns."""
    return int(np.ceil(rows / world)) * npix * 4 * flux_columns


class InMemoryShard:
    """The columns of one worker's shard as numpy arrays (rows first).

    ``iter_batches`` takes the keywords of Ray's ``DataIterator.iter_batches`` that matter
    here: with ``local_shuffle_seed`` every epoch sees the rows in a fresh order drawn from
    that seed (the whole shard is one shuffle buffer), without it they come in stored order.
    """

    def __init__(self, columns: dict[str, np.ndarray]) -> None:
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of unequal length: {sorted(lengths)}")
        self.columns = columns
        self.rows = lengths.pop() if lengths else 0

    @classmethod
    def read(cls, shard: Any, batch_size: int = 4096) -> InMemoryShard:
        """Every batch of a Ray ``DataIterator`` (or anything with ``iter_batches``),
        concatenated per column."""
        parts: dict[str, list[np.ndarray]] = {}
        for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
            for name, values in batch.items():
                parts.setdefault(name, []).append(np.asarray(values))
        return cls({name: np.concatenate(chunks) for name, chunks in parts.items()})

    def iter_batches(self, *, batch_size: int, batch_format: str = "numpy",
                     local_shuffle_seed: int | None = None, **_ignored: Any
                     ) -> Iterator[dict[str, np.ndarray]]:
        """Batches of ``batch_size`` rows (the last may be short) as dicts of arrays."""
        if batch_format != "numpy":
            raise ValueError("an in-memory shard gives numpy batches only")
        order = None if local_shuffle_seed is None else \
            np.random.default_rng(local_shuffle_seed).permutation(self.rows)
        for start in range(0, self.rows, batch_size):
            if order is None:
                yield {n: v[start:start + batch_size] for n, v in self.columns.items()}
            else:
                take = order[start:start + batch_size]
                yield {n: v[take] for n, v in self.columns.items()}
