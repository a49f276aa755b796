"""Label transforms: applied before z-scoring, undone in every output, stored in the
artifact's normalisation."""

import numpy as np
import pytest

from stellar_ray.errors import SpectraError
from stellar_ray.models.normalisation import Normalisation
from stellar_ray.training.config import TrainConfig

NAMES = ["teff", "logg", "vsini"]


def _labels(n=500, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(3500, 9000, n), rng.uniform(0.5, 5, n),
                     rng.lognormal(1.5, 1.0, n)], axis=1)


def test_transformed_labels_are_z_scored_and_come_back_in_their_units():
    labels = _labels()
    norm = Normalisation.of_labels(labels, NAMES, {"teff": "log10", "vsini": "ln"})
    z = norm.z(labels).double().numpy()
    # the z-scores are of log10 Teff, ln vsini and plain log g
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-3)
    np.testing.assert_allclose(z[:, 0], (np.log10(labels[:, 0]) - norm.mean[0]) / norm.std[0],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.unz(z), labels, rtol=1e-5)  # float32 z-scores
    assert norm.low[0] == pytest.approx(labels[:, 0].min())  # the domain in label units
    low, high = norm.z_domain()
    assert low[0] == pytest.approx(z[:, 0].min(), abs=1e-5)
    assert high[2] == pytest.approx(z[:, 2].max(), abs=1e-5)
    again = Normalisation.model_validate_json(norm.model_dump_json())
    np.testing.assert_allclose(again.unz(z), norm.unz(z))


def test_uncertainties_go_back_through_the_transform_by_the_delta_method():
    norm = Normalisation.of_labels(_labels(), NAMES, {"teff": "log10"})
    z, z_err = np.array([[0.3, -0.2, 0.1]]), np.array([[1e-3, 1e-3, 1e-3]])
    err = norm.unz_err(z, z_err)[0]
    numeric = (norm.unz(z + z_err / 2) - norm.unz(z - z_err / 2))[0]  # slope × Δz
    np.testing.assert_allclose(err, numeric, rtol=1e-4)
    assert err[1] == pytest.approx(1e-3 * norm.std[1])


def test_a_transform_of_a_non_positive_label_or_an_unknown_label_is_refused():
    labels = _labels()
    labels[7, 2] = 0.0
    with pytest.raises(SpectraError, match="row 7") as err:
        Normalisation.of_labels(labels, NAMES, {"vsini": "log10"})
    assert err.value.field == "vsini"
    with pytest.raises(ValueError, match="'feh' is not one of data.labels"):
        TrainConfig.model_validate({"model": "specvit", "output": "x", "data": {
            "train": "x", "labels": ["teff"], "transforms": {"feh": "log10"}}})
    with pytest.raises(ValueError, match="log10"):
        TrainConfig.model_validate({"model": "specvit", "output": "x", "data": {
            "train": "x", "labels": ["teff"], "transforms": {"teff": "sqrt"}}})
