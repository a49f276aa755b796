"""Writing and reading datasets on local disk: round trips, atomicity, bad shards."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stellar_ray.errors import ChecksumError, DatasetNotFound, SpectraError
from stellar_ray.spectra.batch import SpectrumBatch
from stellar_ray.spectra.dataset import (
    DatasetWriter,
    iter_shards,
    load_manifest,
    put_table,
    read_shard,
    validate_dataset,
)
from stellar_ray.spectra.manifest import MANIFEST_NAME, ShardRecord

from .conftest import make_batch, make_manifest


def write(url, batch, **kw):
    with DatasetWriter(url, make_manifest(**kw)) as w:
        w.write(batch)
    return load_manifest(url)


def test_round_trip_is_bit_identical(tmp_url):
    b = make_batch(25)
    m = write(tmp_url, b)
    assert [s.rows for s in m.shards] == [10, 10, 5]
    back = SpectrumBatch.concat(list(iter_shards(tmp_url)))
    for name in ("flux", "sigma", "mask"):
        assert getattr(back, name).tobytes() == getattr(b, name).tobytes()
    assert back.labels["teff"].tobytes() == b.labels["teff"].tobytes()
    assert list(back.spectrum_id) == list(b.spectrum_id)


def test_manifest_records_checksums_and_provenance(tmp_url):
    m = write(tmp_url, make_batch(12))
    for s in m.shards:
        data = Path(os.path.join(tmp_url, s.path)).read_bytes()
        assert hashlib.sha256(data).hexdigest() == s.sha256 and len(data) == s.bytes
        assert s.stats["teff"][0] <= s.stats["teff"][1]
    assert m.provenance.producer == "tests"
    assert m.num_rows == 12


def test_shards_are_plain_parquet_with_native_tensors(tmp_url):
    m = write(tmp_url, make_batch(5))
    table = pq.read_table(os.path.join(tmp_url, m.shards[0].path))
    assert isinstance(table.schema.field("flux").type, pa.FixedShapeTensorType)
    assert table.column("flux").chunk(0).to_numpy_ndarray().shape == (5, 64)


def test_no_temporary_files_and_no_manifest_on_failure(tmp_url):
    bad = make_batch(25)
    bad.flux[17, 3] = np.nan
    with pytest.raises(SpectraError, match="row 7: field 'flux'"), \
            DatasetWriter(tmp_url, make_manifest()) as w:
        w.write(bad)
    names = os.listdir(tmp_url)
    assert MANIFEST_NAME not in names  # the partial dataset stays invisible
    assert not [n for n in names if n.startswith(".tmp")]
    with pytest.raises(DatasetNotFound):
        load_manifest(tmp_url)


def test_existing_dataset_is_not_overwritten_by_accident(tmp_url):
    write(tmp_url, make_batch(3))
    with pytest.raises(SpectraError, match="already exists"):
        DatasetWriter(tmp_url, make_manifest())
    with DatasetWriter(tmp_url, make_manifest(), overwrite=True) as w:
        w.write(make_batch(4, prefix="new"))
    assert load_manifest(tmp_url).num_rows == 4


def test_corrupt_shard_fails_its_checksum(tmp_url):
    m = write(tmp_url, make_batch(25))
    path = os.path.join(tmp_url, m.shards[1].path)
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as info:
        read_shard(tmp_url, m.shards[1], m)
    assert m.shards[1].path in str(info.value) and "checksum mismatch" in str(info.value)


def test_truncated_shard_is_reported(tmp_url):
    m = write(tmp_url, make_batch(25))
    path = os.path.join(tmp_url, m.shards[0].path)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 3])
    with pytest.raises(ChecksumError, match="corrupt or truncated"):
        read_shard(tmp_url, m.shards[0], m)
    # Without checksum verification the Parquet reader itself must still refuse it.
    with pytest.raises(SpectraError, match=f"{m.shards[0].path}: not a readable Parquet"):
        read_shard(tmp_url, m.shards[0], m, verify=False)


def forged_shard(url, name, table) -> ShardRecord:
    """Write ``table`` as a shard with a correct checksum, as a foreign writer might."""
    nbytes, sha = put_table(url, name, table)
    return ShardRecord(path=name, rows=table.num_rows, bytes=nbytes, sha256=sha)


def test_missing_column_is_named(tmp_url):
    m = write(tmp_url, make_batch(4))
    table = make_batch(4, prefix="x").to_arrow(m).drop_columns(["sigma"])
    record = forged_shard(tmp_url, "part-bad.parquet", table)
    with pytest.raises(SpectraError, match="part-bad.parquet: field 'sigma': column missing"):
        read_shard(tmp_url, record, m)


def test_wrong_pixel_count_in_a_shard_is_named(tmp_url):
    m = write(tmp_url, make_batch(4))
    table = make_batch(4, npix=50, prefix="x").to_arrow(make_manifest(npix=50))
    record = forged_shard(tmp_url, "part-short.parquet", table)
    with pytest.raises(SpectraError, match=r"field 'flux': type .*shape=\[50\]"):
        read_shard(tmp_url, record, m)


def test_missing_shard_is_named(tmp_url):
    m = write(tmp_url, make_batch(25))
    os.unlink(os.path.join(tmp_url, m.shards[2].path))
    with pytest.raises(SpectraError, match="listed in the manifest is missing"):
        validate_dataset(tmp_url)


def test_duplicate_ids_across_shards_are_refused(tmp_url):
    b = make_batch(25)
    b.spectrum_id[23] = b.spectrum_id[4]  # lands in the third shard, first in the first
    with pytest.raises(SpectraError, match=r"part-000002.parquet: row 3: field 'spectrum_id': "
                       r"duplicate spectrum_id 's00004' \(also in part-000000.parquet row 4\)"), \
            DatasetWriter(tmp_url, make_manifest()) as w:
        w.write(b)
    assert not os.path.exists(os.path.join(tmp_url, MANIFEST_NAME))


def test_validate_finds_values_written_behind_our_back(tmp_url):
    m = write(tmp_url, make_batch(4))
    b = make_batch(4, prefix="y")
    b.sigma[2, 30] = 0.0
    nbytes, sha = put_table(tmp_url, m.shards[0].path, b.to_arrow(m))
    data = json.loads(Path(os.path.join(tmp_url, MANIFEST_NAME)).read_text())
    data["shards"][0].update(bytes=nbytes, sha256=sha)
    Path(os.path.join(tmp_url, MANIFEST_NAME)).write_text(json.dumps(data))
    with pytest.raises(SpectraError, match="row 2: field 'sigma'"):
        validate_dataset(tmp_url)


def test_filters_prune_shards_and_rows(tmp_url):
    b = make_batch(30)
    b.metadata["snr"] = np.arange(30, dtype=np.float32)  # shards hold 0-9, 10-19, 20-29
    write(tmp_url, b)
    m = load_manifest(tmp_url)
    from stellar_ray.spectra.dataset import shard_may_match

    assert [shard_may_match(s, [("snr", ">", 19.5)]) for s in m.shards] == [False, False, True]
    got = SpectrumBatch.concat(list(iter_shards(tmp_url, filters=[("snr", ">", 14)])))
    assert sorted(got.metadata["snr"].tolist()) == list(range(15, 30))
