"""A worker's shard held in memory: every row once per epoch, a fresh order per seed."""

import numpy as np

from stellar_ray.training.in_memory import InMemoryShard, shard_bytes


class _Batches:
    """Stands in for a Ray DataIterator: batches of 7 rows in stored order."""

    def __init__(self, columns):
        self.columns = columns

    def iter_batches(self, batch_size, batch_format):
        n = len(next(iter(self.columns.values())))
        for i in range(0, n, 7):
            yield {k: v[i:i + 7] for k, v in self.columns.items()}


def test_every_row_once_per_epoch_in_a_fresh_order_per_seed():
    ids = np.arange(50)
    flux = np.repeat(ids[:, None], 4, axis=1).astype(np.float32)
    shard = InMemoryShard.read(_Batches({"id": ids, "flux": flux}))
    assert shard.rows == 50

    def epoch(seed):
        batches = list(shard.iter_batches(batch_size=16, local_shuffle_seed=seed,
                                          local_shuffle_buffer_size=99))
        assert [len(b["id"]) for b in batches] == [16, 16, 16, 2]
        for b in batches:  # the rows stay whole
            np.testing.assert_array_equal(b["flux"][:, 0], b["id"])
        return np.concatenate([b["id"] for b in batches])

    first, again, other = epoch(1), epoch(1), epoch(2)
    assert sorted(first) == list(ids) and sorted(other) == list(ids)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other) and not np.array_equal(first, ids)
    stored = np.concatenate([b["id"] for b in shard.iter_batches(batch_size=16)])
    np.testing.assert_array_equal(stored, ids)


def test_an_empty_shard_gives_no_batches_and_sizes_are_per_worker():
    assert list(InMemoryShard.read(_Batches({"id": np.arange(0)})).iter_batches(
        batch_size=4)) == []
    assert shard_bytes(rows=1001, npix=256, flux_columns=3, world=2) == 501 * 256 * 4 * 3
