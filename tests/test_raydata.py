"""Ray Data reading and writing of spectrum datasets, and result catalogs."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from stellar_ray.errors import ChecksumError, SpectraError
from stellar_ray.spectra.batch import SpectrumBatch
from stellar_ray.spectra.catalog import CatalogWriter, read_catalog, write_catalog
from stellar_ray.spectra.dataset import DatasetWriter, iter_shards, load_manifest
from stellar_ray.spectra.raydata import SpectraDatasource, read_spectra, write_spectra

from .conftest import make_batch, make_manifest

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def dataset(tmp_url):
    b = make_batch(45)
    b.metadata["snr"] = np.arange(45, dtype=np.float32)
    with DatasetWriter(tmp_url, make_manifest()) as w:
        w.write(b)
    return tmp_url, b


def test_batches_have_2d_float32_flux(ray_session, dataset):
    url, b = dataset
    ds = read_spectra(url)
    assert ds.count() == 45
    seen = []
    for batch in ds.iter_batches(batch_size=16, batch_format="numpy"):
        assert batch["flux"].dtype == np.float32 and batch["flux"].ndim == 2
        assert batch["flux"].shape[1] == 64
        assert batch["mask"].dtype == np.uint8
        seen += list(batch["spectrum_id"])
    assert sorted(seen) == sorted(b.spectrum_id)


def test_projection_and_pushdown(ray_session, dataset):
    url, b = dataset
    ds = read_spectra(url, columns=["flux", "snr"], filter=[("snr", ">", 20)])
    rows = ds.take_all()
    assert set(rows[0]) == {"spectrum_id", "flux", "snr"}
    assert sorted(r["snr"] for r in rows) == list(range(21, 45))
    by_id = {r["spectrum_id"]: r["flux"] for r in rows}
    i = list(b.spectrum_id).index(rows[0]["spectrum_id"])
    assert np.array_equal(by_id[rows[0]["spectrum_id"]], b.flux[i])
    # the manifest statistics keep the first two shards (snr 0-19) from being read at all
    source = SpectraDatasource(url, load_manifest(url), filters=[("snr", ">", 20)])
    assert [r.path for r in source.records] == [s.path for s in load_manifest(url).shards[2:]]


def test_unknown_column_or_filter_is_named(ray_session, dataset):
    url, _ = dataset
    with pytest.raises(SpectraError, match="field 'colour'"):
        read_spectra(url, columns=["colour"])
    with pytest.raises(SpectraError, match="field 'magnitude'"):
        read_spectra(url, filter=[("magnitude", "<", 12)])


def test_corrupt_shard_fails_the_read(ray_session, dataset):
    url, _ = dataset
    m = load_manifest(url)
    path = f"{url}/{m.shards[1].path}"
    data = bytearray(Path(path).read_bytes())
    data[100] ^= 0x01
    Path(path).write_bytes(bytes(data))
    with pytest.raises(Exception) as info:
        read_spectra(url).materialize()
    assert m.shards[1].path in str(info.value)
    assert isinstance(info.value, ChecksumError) or "checksum mismatch" in str(info.value)


def test_write_spectra_round_trip(ray_session, dataset, tmp_path):
    url, b = dataset
    out = str(tmp_path / "doubled")
    m = make_manifest()
    doubled = read_spectra(url).map_batches(lambda x: {**x, "flux": x["flux"] * 2})
    written = write_spectra(doubled, out, m)
    assert written.num_rows == 45
    assert all(s.rows <= m.rows_per_shard for s in written.shards)
    back = SpectrumBatch.concat(list(iter_shards(out)))
    order = np.argsort(back.spectrum_id.astype(str))
    assert np.array_equal(back.flux[order], 2 * b.flux)
    assert np.array_equal(back.labels["teff"][order], b.labels["teff"])


def test_catalog_writer_commits_parts_once(tmp_path):
    url = str(tmp_path / "cat")
    w = CatalogWriter(url)
    w.commit("shard-a", pa.table({"spectrum_id": ["a", "b"], "teff": [5000.0, 5100.0]}))
    w.commit("shard-b", pa.table({"spectrum_id": ["c"], "teff": [6000.0]}))
    w.commit("shard-a", pa.table({"spectrum_id": ["a", "b"], "teff": [5001.0, 5101.0]}))
    assert w.committed_keys() == {"shard-a", "shard-b"}
    m = w.finalize()
    assert m.num_rows == 3
    table = read_catalog(url)
    assert sorted(table.column("spectrum_id").to_pylist()) == ["a", "b", "c"]
    assert 5001.0 in table.column("teff").to_pylist()


def test_catalog_with_a_repeated_id_is_refused(tmp_path):
    url = str(tmp_path / "cat")
    w = CatalogWriter(url)
    w.commit("x", pa.table({"spectrum_id": ["a"], "v": [1.0]}))
    w.commit("y", pa.table({"spectrum_id": ["a"], "v": [2.0]}))
    with pytest.raises(SpectraError, match="duplicate spectrum_id 'a'"):
        w.finalize()


def test_write_catalog_from_ray(ray_session, dataset, tmp_path):
    url, b = dataset
    results = read_spectra(url, columns=["snr"]).map_batches(
        lambda x: {"spectrum_id": x["spectrum_id"], "snr2": x["snr"] * 2.0})
    out = str(tmp_path / "cat")
    m = write_catalog(results, out, rows_per_part=20)
    table = read_catalog(out)
    assert m.num_rows == 45 == table.num_rows
    assert sorted(table.column("spectrum_id").to_pylist()) == sorted(b.spectrum_id)
