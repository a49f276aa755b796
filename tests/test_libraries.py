"""SM-Net style library building: priority union, parameter-space split, augmentation."""

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from stellar_ray.cli import app
from stellar_ray.errors import SpectraError
from stellar_ray.simulation.libraries import (
    LibraryConfig,
    augmentation_counts,
    build_library,
    parameter_split,
)
from stellar_ray.spectra.dataset import DatasetWriter
from stellar_ray.training.config import TrainConfig
from stellar_ray.training.run import prepare_data, train

from .conftest import make_batch, make_manifest

pytestmark = pytest.mark.timeout(180)


def run_cli(*args: str) -> str:
    out = CliRunner().invoke(app, list(args))
    assert out.exit_code == 0, out.output
    return out.output


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


def _library(url, teff, logg, prefix, seed):
    """A library on a (teff, logg) lattice whose flux depends on the labels."""
    batch = make_batch(len(teff), seed=seed, prefix=prefix)
    batch.labels["teff"], batch.labels["logg"] = teff, logg
    batch.flux[:, 2:] += (1e-4 * (teff - 5000.0))[:, None] * np.sin(np.arange(62))[None]
    with DatasetWriter(url, make_manifest(rows_per_shard=32)) as w:
        w.write(batch)


def test_library_command_unites_splits_and_augments_and_training_uses_it(ray_session,
                                                                       tmp_path):
    t, g = np.meshgrid(4000.0 + 250 * np.arange(8), 0.5 * np.arange(8), indexing="ij")
    teff, logg = t.ravel(), g.ravel()
    _library(str(tmp_path / "a"), teff, logg, "a.", 0)  # ids with dots, as file names have
    # library b: 16 models a already has, 16 models beyond a's lattice
    extra_t = np.repeat(6000.0 + 250 * np.arange(4), 4)
    b_teff = np.concatenate([teff[:16], extra_t])
    b_logg = np.concatenate([logg[:16], np.tile(0.5 * np.arange(4), 4)])
    _library(str(tmp_path / "b"), b_teff, b_logg, "b.", 1)
    out = run_cli("library", str(tmp_path / "a"), str(tmp_path / "b"), "--to",
                  str(tmp_path / "lib"), "--keys", "teff,logg", "--split", "--augment", "4",
                  "--pixels", "32")
    assert "library of 80 spectra from 2 sources" in out
    assert "in_train, in_validation, copies" in out
    lib = pq.read_table([str(p) for p in sorted((tmp_path / "lib").glob("part-*.parquet"))])
    rows = lib.to_pylist()
    assert sorted(r["spectrum_id"] for r in rows) == sorted(
        [f"a.{i:05d}" for i in range(64)] + [f"b.{i:05d}" for i in range(16, 32)])
    labels = np.array([[r["teff"], r["logg"]] for r in rows])
    split = parameter_split(labels)
    np.testing.assert_array_equal([r["in_train"] for r in rows], split.train)
    np.testing.assert_array_equal([r["in_validation"] for r in rows], split.validation)
    copies = np.array([r["copies"] for r in rows])
    assert copies.min() == 1 and copies.max() == 4 and (copies > 1).sum() == 16

    cfg = TrainConfig.model_validate({
        "model": "ridge", "model_args": {"alpha": 1.0}, "output": str(tmp_path / "runs"),
        "data": {"train": str(tmp_path / "lib"), "labels": ["teff", "logg"],
                 "train_column": "in_train", "validation_column": "in_validation",
                 "repeat_column": "copies"}})
    data = prepare_data(cfg)
    assert data.train_rows == copies[split.train].sum()
    assert data.validation.count() == split.validation.sum()
    assert "trained ridge for 1 epochs" in train(cfg).text("ridge")
    with pytest.raises(SpectraError, match="'in_test' is not a column"):
        prepare_data(cfg.model_copy(update={"data": cfg.data.model_copy(
            update={"train_column": "in_test"})}))
    with DatasetWriter(str(tmp_path / "c"), make_manifest(npix=32)) as w:
        w.write(make_batch(3, npix=32, prefix="c"))
    with pytest.raises(SpectraError, match="grid or flux unit differs"):
        build_library(LibraryConfig(sources=[str(tmp_path / "a"), str(tmp_path / "c")],
                                    keys=["teff", "logg"]),
                      str(tmp_path / "bad"))
