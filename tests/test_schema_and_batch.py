"""The row schema, tensor columns and the row rules."""

import numpy as np
import pyarrow as pa
import pytest

from stellar_ray.errors import SpectraError
from stellar_ray.spectra.batch import SpectrumBatch, check_batch, find_problems
from stellar_ray.spectra.schema import tensor_to_numpy, to_tensor_array

from .conftest import make_batch, make_manifest


def test_tensor_column_round_trip_is_copy_free():
    flux = np.random.default_rng(1).normal(size=(7, 33)).astype(np.float32)
    arr = to_tensor_array(flux, np.float32)
    assert isinstance(arr, pa.FixedShapeTensorArray)
    assert arr.type.shape == [33]
    back = tensor_to_numpy(arr)
    assert back.shape == (7, 33) and back.dtype == np.float32
    assert np.shares_memory(back, flux)
    assert np.array_equal(back, flux)


def test_tensor_to_numpy_accepts_plain_fixed_size_lists():
    flux = np.arange(12, dtype=np.float32).reshape(3, 4)
    plain = pa.FixedSizeListArray.from_arrays(pa.array(flux.ravel()), 4)
    assert np.array_equal(tensor_to_numpy(plain), flux)


def test_batch_to_arrow_and_back_is_exact():
    m = make_manifest()
    b = make_batch(12)
    table = b.to_arrow(m)
    assert table.schema.equals(m.arrow_schema())
    back = SpectrumBatch.from_arrow(table, m)
    for name in ("flux", "sigma", "mask"):
        assert np.array_equal(getattr(back, name), getattr(b, name))
    assert list(back.spectrum_id) == list(b.spectrum_id)
    assert np.array_equal(back.labels["teff"], b.labels["teff"])
    assert np.array_equal(back.metadata["snr"], b.metadata["snr"])
    assert np.isnan(back.metadata["dec"]).all()  # not given -> null


def test_unknown_metadata_column_is_named():
    b = make_batch(3)
    b.metadata["colour"] = np.ones(3)
    with pytest.raises(SpectraError, match="field 'colour'"):
        b.to_arrow(make_manifest())


def test_problems_are_found_per_rule():
    b = make_batch(6)
    b.flux[1, 10] = np.nan
    b.flux[2, 11] = np.inf
    b.sigma[3, 12] = 0.0
    b.sigma[4, 13] = -1.0
    b.spectrum_id[5] = b.spectrum_id[0]
    problems = find_problems(b.spectrum_id, b.flux, b.sigma, b.mask)
    got = {(p.row, p.field) for p in problems}
    assert got == {(1, "flux"), (2, "flux"), (3, "sigma"), (4, "sigma"), (5, "spectrum_id")}
    by_row = {p.row: p.reason for p in problems}
    assert "pixel 10" in by_row[1] and "nan" in by_row[1]
    assert "pixel 12" in by_row[3]


def test_infinite_sigma_is_allowed_only_on_masked_pixels():
    b = make_batch(2)
    assert find_problems(b.spectrum_id, b.flux, b.sigma, b.mask) == []  # pixels 0-1: inf
    b.sigma[0, 20] = np.inf
    (p,) = find_problems(b.spectrum_id, b.flux, b.sigma, b.mask)
    assert (p.row, p.field) == (0, "sigma")


def test_check_batch_names_file_row_and_field():
    b = make_batch(4)
    b.flux[2, 5] = np.nan
    with pytest.raises(SpectraError) as info:
        check_batch(b, make_manifest(), source="shard.parquet", row_offset=100)
    assert info.value.file == "shard.parquet"
    assert info.value.row == 102
    assert info.value.field == "flux"
    assert str(info.value).startswith("shard.parquet: row 102: field 'flux': non-finite flux")


def test_wrong_array_length_is_rejected():
    with pytest.raises(SpectraError, match="50 pixels per spectrum, the dataset grid has 64"):
        check_batch(make_batch(2, npix=50), make_manifest(npix=64), source="x")


def test_noiseless_datasets_need_zero_sigma():
    m = make_manifest(uncertainties="none")
    b = make_batch(2)
    b.sigma[:] = 0.0
    check_batch(b, m)
    b.sigma[1, 3] = 0.1
    with pytest.raises(SpectraError, match="noiseless"):
        check_batch(b, m)
