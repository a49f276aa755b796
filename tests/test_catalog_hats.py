"""Catalogs for the ecosystem: a survey with sky positions is catalogued by `infer` (which
carries ra/dec), written HEALPix-partitioned by `stellar-ray catalog to-hats`, opened by LSDB
and cross-matched with a Gaia-like catalog."""

from __future__ import annotations

import subprocess
import sys

import lsdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hats.pixel_math.healpix_shim import radec2pix

from stellar_ray.errors import SpectraError
from stellar_ray.inference.config import InferConfig
from stellar_ray.inference.pipeline import infer
from stellar_ray.simulation.survey import SimulationConfig, simulate
from stellar_ray.spectra.catalog import CatalogWriter, load_catalog_manifest, read_catalog
from stellar_ray.spectra.catalog_hats import catalog_to_hats
from stellar_ray.spectra.raydata import read_spectra

from .helpers import SURVEY, make_artifact

SKY = {"ra": [150.0, 160.0], "dec": [-5.0, 5.0]}


@pytest.fixture(scope="module")
def catalogued(ray_session, tmp_path_factory):
    """96 spectra on a 100 deg² patch and their catalog (an untrained SpecViT's)."""
    root = tmp_path_factory.mktemp("hats")
    survey = str(root / "survey")
    simulate(SimulationConfig.model_validate({**SURVEY, "n_spectra": 96, "rows_per_shard": 32,
                                              "sky": SKY}), survey, progress=False)
    model = make_artifact(survey, root, "specvit")
    catalog = str(root / "catalog")
    infer(InferConfig(model=model, data=survey, to=catalog), progress=False)
    return root, survey, catalog


def test_a_catalog_in_hats_opens_in_lsdb_and_crossmatches(catalogued, tmp_path):
    _, survey, catalog = catalogued
    inputs = read_spectra(survey, columns=["spectrum_id", "ra", "dec"]).to_pandas() \
        .set_index("spectrum_id")
    assert load_catalog_manifest(catalog).units["ra"] == "deg"
    hats = tmp_path / "survey-hats"
    out = subprocess.run([sys.executable, "-m", "stellar_ray.cli", "catalog", "to-hats",
                          catalog, "--to", str(hats), "--max-rows", "20"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    opened = lsdb.open_catalog(hats)
    frame = opened.compute()
    # every row once, with its position as the spectrum had it
    assert sorted(frame["spectrum_id"]) == sorted(inputs.index)
    by_id = frame.set_index("spectrum_id")
    assert np.allclose(by_id["ra"], inputs.loc[by_id.index, "ra"], rtol=0, atol=1e-12)
    assert np.allclose(by_id["dec"], inputs.loc[by_id.index, "dec"], rtol=0, atol=1e-12)
    # sky partitions of at most 20 rows, each holding the stars inside it
    pixels = opened.get_healpix_pixels()
    assert len(pixels) >= 96 // 20
    for pixel, part in zip(pixels, opened.to_delayed()):
        rows = part.compute()
        assert 0 < len(rows) <= 20
        assert np.all(radec2pix(pixel.order, rows["ra"].to_numpy(),
                                rows["dec"].to_numpy()) == pixel.pixel)
        # LSDB indexes each partition by the spatial index, sorted
        assert rows.index.name == "_healpix_29" and rows.index.is_monotonic_increasing
        assert np.array_equal(rows.index.to_numpy() >> (2 * (29 - pixel.order)),
                              np.full(len(rows), pixel.pixel))
    # a Gaia-like catalog 0.1 arcsec away: every star finds its own source
    rng = np.random.default_rng(1)
    offset = 0.1 / 3600
    gaia = pd.DataFrame({"source_id": [f"gaia-{sid}" for sid in inputs.index],
                         "ra": inputs["ra"].to_numpy() + offset / np.cos(
                             np.radians(inputs["dec"].to_numpy())),
                         "dec": inputs["dec"].to_numpy(),
                         "g_mag": rng.uniform(10, 17, len(inputs))})
    matched = opened.crossmatch(lsdb.from_dataframe(gaia, ra_column="ra", dec_column="dec"),
                                n_neighbors=1, radius_arcsec=1.0,
                                suffixes=("", "_gaia")).compute()
    assert len(matched) == len(inputs)
    assert all(f"gaia-{sid}" == src for sid, src in zip(matched["spectrum_id"],
                                                        matched["source_id_gaia"]))
    assert np.allclose(matched["_dist_arcsec"], 0.1, atol=1e-3)


def test_rows_without_positions_are_named(ray_session, tmp_path):
    writer = CatalogWriter(str(tmp_path / "cat"))
    writer.commit("0", pa.table({"spectrum_id": ["a.1", "b.2", "c.3"],
                                 "ra": [10.0, np.nan, 12.0], "dec": [1.0, 2.0, 3.0]}))
    writer.finalize()
    with pytest.raises(SpectraError, match=r"1 rows have no valid sky position "
                                           r"\(first: 'b\.2'\)"):
        catalog_to_hats(str(tmp_path / "cat"), str(tmp_path / "hats"))
    assert read_catalog(str(tmp_path / "cat")).num_rows == 3
