"""Wavelength grids, presets and the manifest."""

import json

import numpy as np
import pytest

from stellar_ray.errors import SpectraError
from stellar_ray.spectra.grid import ArmGrid, WavelengthGrid
from stellar_ray.spectra.manifest import LabelSpec, Manifest
from stellar_ray.spectra.presets import hrs_grid, lrs_grid, parse_grid

from .conftest import make_manifest


def test_lrs_grid_matches_the_4most_mock_l1_sampling():
    w = lrs_grid().wavelength()
    assert w.size == 23_201
    assert w[0] == 3700.0 and w[-1] == 9500.0
    assert np.allclose(np.diff(w), 0.25)


def test_hrs_grid_has_three_arms_at_constant_resolution():
    g = hrs_grid()
    assert [a.name for a in g.arms] == ["blue", "green", "red"]
    w = g.wavelength()
    for name, sl in g.arm_slices().items():
        arm = w[sl]
        r = arm[:-1] / np.diff(arm) / 2.6  # pixels per resel 2.6 -> R
        assert np.allclose(r, 20_000, rtol=1e-3), name
    assert w[0] >= 3926 and w[-1] <= 6790


def test_parse_grid_forms(tmp_path):
    g = parse_grid("5000:5010:0.5")
    assert g.npix == 21
    path = tmp_path / "g.yaml"
    path.write_text("medium: air\narms:\n- {name: x, kind: linear, start: 4000, step: 1, "
                    "npix: 5}\n")
    assert parse_grid(str(path)).medium == "air"
    with pytest.raises(ValueError, match="--grid 'nonsense'"):
        parse_grid("nonsense")


def test_from_wavelength_recognises_spacing():
    lin = np.arange(100) * 0.5 + 4000.0
    assert WavelengthGrid.from_wavelength(lin, "vacuum").arms[0].kind == "linear"
    log = 10 ** (np.log10(4000.0) + 1e-5 * np.arange(100))
    g = WavelengthGrid.from_wavelength(log, "vacuum")
    assert g.arms[0].kind == "log10"
    assert np.allclose(g.wavelength(), log, rtol=1e-11, atol=0)
    odd = np.sort(np.random.default_rng(0).uniform(4000, 5000, 50))
    assert WavelengthGrid.from_wavelength(odd, "air").arms[0].kind == "table"


def test_non_monotonic_tabulated_grid_is_refused():
    with pytest.raises(ValueError, match="not strictly increasing at index 2"):
        ArmGrid(name="x", kind="table", values=[1.0, 2.0, 1.5, 3.0])


def test_overlapping_arms_are_refused():
    a = ArmGrid(name="a", kind="linear", start=4000, step=1, npix=10)
    b = ArmGrid(name="b", kind="linear", start=4005, step=1, npix=10)
    with pytest.raises(ValueError, match="must not overlap"):
        WavelengthGrid(arms=[a, b])


def test_manifest_json_round_trip():
    m = make_manifest()
    back = Manifest.from_json(m.to_json())
    assert back == m
    assert back.arrow_schema().equals(m.arrow_schema())


def test_manifest_rejects_reserved_and_repeated_names():
    with pytest.raises(ValueError, match="'snr'"):
        make_manifest(labels=("teff", "snr"))
    with pytest.raises(ValueError, match="'teff'"):
        make_manifest(labels=("teff", "teff"))


def test_manifest_from_a_newer_stellar_ray_is_refused():
    data = json.loads(make_manifest().to_json())
    data["schema_version"] = 99
    with pytest.raises(SpectraError, match="newer than this stellar-ray"):
        Manifest.from_json(json.dumps(data), source="x/_manifest.json")


def test_label_spec_carries_units():
    m = make_manifest()
    m2 = m.model_copy(update={"labels": [LabelSpec(name="teff", unit="K")]})
    assert m2.label_names == ["teff"]
