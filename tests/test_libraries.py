"""SM-Net style library building: priority union, parameter-space split, augmentation."""

import numpy as np
import pytest

from stellar_ray.errors import SpectraError
from stellar_ray.simulation.libraries import (
    augmentation_counts,
    combine_libraries,
    parameter_split,
)
from stellar_ray.spectra.batch import SpectrumBatch
from stellar_ray.spectra.dataset import DatasetWriter, iter_shards

from .conftest import make_batch, make_manifest

pytestmark = pytest.mark.timeout(180)


def test_parameter_split_follows_the_two_two_pattern():
    t = np.arange(12.0)
    labels = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    split = parameter_split(labels)
    # along each axis: values 0,1 and 10,11 are shared; 2,3 train; 4,5 validation; ...
    in_train = {0, 1, 2, 3, 6, 7, 10, 11}
    in_val = {0, 1, 4, 5, 8, 9, 10, 11}
    for (a, b), tr, va, te in zip(labels.astype(int), split.train, split.validation,
                                  split.test):
        assert tr == (a in in_train and b in in_train)
        assert va == (a in in_val and b in in_val)
        assert te == (not tr and not va)
    shared = split.train & split.validation
    assert set(map(tuple, labels[shared].astype(int))) <= {(a, b) for a in (0, 1, 10, 11)
                                                           for b in (0, 1, 10, 11)}


def test_augmentation_favours_distinct_spectra(ray_session):
    rng = np.random.default_rng(0)
    base = 1.0 + 0.01 * rng.normal(size=(1, 512))
    common = base + 0.001 * rng.normal(size=(90, 512))
    odd = 1.0 + 0.3 * rng.normal(size=(10, 512))
    flux = np.concatenate([common, odd])
    flux[:, :20] = 0.0  # zero-flux pixels are ignored by the L1 term
    copies, d = augmentation_counts(flux, pixels=128, block_rows=32)
    assert copies.shape == (100,) and copies.min() == 1 and copies.max() == 10
    assert np.all(copies[90:] > 1) and (copies > 1).sum() == 20
    assert d[90:].min() > d[:90].max()


def test_combine_libraries_keeps_the_higher_priority_spectrum(ray_session, tmp_path):
    a, b = make_batch(10, prefix="a"), make_batch(10, seed=1, prefix="b")
    b.labels["teff"][:4] = a.labels["teff"][:4]  # four exact overlaps in (teff, logg)
    b.labels["logg"][:4] = a.labels["logg"][:4]
    urls = [str(tmp_path / "a"), str(tmp_path / "b")]
    for url, batch in zip(urls, (a, b)):
        with DatasetWriter(url, make_manifest()) as w:
            w.write(batch)
    m = combine_libraries(urls, str(tmp_path / "both"), keys=("teff", "logg"))
    got = SpectrumBatch.concat(list(iter_shards(str(tmp_path / "both"))))
    assert m.num_rows == 16
    assert sorted(got.spectrum_id) == sorted(list(a.spectrum_id) + list(b.spectrum_id[4:]))
    other = make_manifest(npix=32)
    with DatasetWriter(str(tmp_path / "c"), other) as w:
        w.write(make_batch(3, npix=32, prefix="c"))
    with pytest.raises(SpectraError, match="grid or flux unit differs"):
        combine_libraries([urls[0], str(tmp_path / "c")], str(tmp_path / "bad"))
