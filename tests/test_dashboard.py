"""The dashboard as its users meet it: `stellar-ray dashboard` started on a free local port
and driven in headless Chromium (Debian's chromium and chromium-driver, installed by `make
test`), over a real emulator, a fit-mode catalog made by `infer` and training histories;
and its server-side pieces through their public classes."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from astropy.table import Table
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from stellar_ray.artifact import load_artifact
from stellar_ray.dashboard.catalog_view import CatalogView, Filter
from stellar_ray.dashboard.emulator_view import EmulatorView
from stellar_ray.dashboard.star import StarInspector, recorded_config
from stellar_ray.inference.config import InferConfig
from stellar_ray.inference.pipeline import infer
from stellar_ray.inference.quality import CatalogFlag
from stellar_ray.simulation.survey import SimulationConfig, simulate
from stellar_ray.spectra.catalog import CatalogWriter, read_catalog
from stellar_ray.training.history import RunHistory
from stellar_ray.training.sweep import RESULTS_FILE

from .helpers import LABELS, SURVEY, dataset_ids, fitted_payne, free_port, make_artifact

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SPECTRUM_LINE = "#emu-spectrum .scatterlayer .trace path.js-line"
OPTION = "//*[normalize-space(text())='nearest training spectrum']"


@pytest.fixture(scope="module")
def sources(ray_session, tmp_path_factory):
    """A 64-spectrum survey, a Payne fitted to it, its fit-mode catalog (made by infer)
    and a folder with a run's history and a sweep's trial table."""
    root = tmp_path_factory.mktemp("dashboard")
    survey = str(root / "survey")
    simulate(SimulationConfig.model_validate({**SURVEY, "n_spectra": 64, "rows_per_shard": 32}),
             survey, progress=False)
    payne = fitted_payne(survey, root / "models")
    catalog = str(root / "catalog")
    infer(InferConfig(model=payne, data=survey, to=catalog, mode="fit",
                      fit={"restarts": 2, "steps": 100}, carry_columns=LABELS),
          progress=False)
    runs = root / "runs"
    history = RunHistory(str(runs / "payne-a"))
    for epoch, loss in enumerate([1.0, 0.5, 0.3]):
        history.record({"epoch": epoch, "train_loss": loss, "val_loss": loss * 1.1,
                        "flux_mae": loss / 10})
    (runs / "sweep").mkdir()
    pa.parquet.write_table(pa.table({"param/optim.lr": [1e-3, 3e-3], "val_loss": [0.4, 0.3]}),
                           runs / "sweep" / RESULTS_FILE)
    return {"root": root, "survey": survey, "payne": payne, "catalog": catalog,
            "runs": str(runs)}


def _chromium(tmp_path: Path) -> webdriver.Chrome:
    """Headless Chromium with the flags this machine's closed network needs."""
    assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), \
        "Chromium is missing: `make test` installs Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,2400",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _serve(args: list[str], port: int, log: Path) -> subprocess.Popen:
    """`stellar-ray dashboard ...` in its own process group, once it answers."""
    proc = subprocess.Popen([sys.executable, "-m", "stellar_ray.cli", "dashboard", *args,
                             "--port", str(port)], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the dashboard did not answer: {log.read_text()}")


def test_the_dashboard_in_a_browser(sources, tmp_path):
    port = free_port()
    server = _serve(["--artifact", sources["payne"], "--catalog", sources["catalog"],
                     "--data", sources["survey"], "--runs", sources["runs"]], port,
                    tmp_path / "server.log")
    browser = _chromium(tmp_path)
    wait = WebDriverWait(browser, 60)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        # the emulator explorer: a spectrum, and the bounds at its point
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, SPECTRUM_LINE))
        wait.until(lambda b: b.find_elements(By.ID, "emu-crb"))
        bounds = [float(r.text.split()[1]) for r in
                  browser.find_elements(By.CSS_SELECTOR, "#emu-crb tr")]
        assert len(bounds) == 3 and all(np.isfinite(b) and b > 0 for b in bounds)

        def drawn() -> str:
            return browser.find_element(By.CSS_SELECTOR, SPECTRUM_LINE).get_attribute("d")

        before = drawn()
        thumb = browser.find_elements(By.CSS_SELECTOR, "[role=slider]")[0]
        teff0 = float(thumb.get_attribute("aria-valuenow"))
        ActionChains(browser).drag_and_drop_by_offset(thumb, 80, 0).perform()
        wait.until(lambda b: drawn() != before)
        assert float(browser.find_elements(By.CSS_SELECTOR, "[role=slider]")[0]
                     .get_attribute("aria-valuenow")) > teff0
        # the nearest training spectrum overlaid, with the residual below
        browser.find_element(By.ID, "emu-overlay").click()
        wait.until(lambda b: b.find_elements(By.XPATH, OPTION)).pop().click()
        wait.until(lambda b: "nearest" in b.find_element(By.ID, "emu-note").text)
        note = browser.find_element(By.ID, "emu-note").text
        assert any(sid in note for sid in dataset_ids(sources["survey"]))
        wait.until(lambda b: len(b.find_elements(
            By.CSS_SELECTOR, "#emu-spectrum .scatterlayer .trace")) >= 3)

        # the catalog: every star in the Kiel diagram; a click shows that star
        browser.find_element(By.XPATH, "//*[text()='Catalog']").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR,
                                                 "#cat-kiel .scatterlayer .point")) == 64)
        plot = browser.find_element(By.CSS_SELECTOR, "#cat-kiel .js-plotly-plot")
        x, y, index = browser.execute_script(
            "const gd = arguments[0], fl = gd._fullLayout, t = gd._fullData[0];"
            "return [fl.xaxis.d2p(t.x[5]) + fl._size.l, fl.yaxis.d2p(t.y[5]) + fl._size.t,"
            " t.customdata[5]];", plot)
        box = plot.rect
        ActionChains(browser).move_to_element_with_offset(
            plot, x - box["width"] / 2, y - box["height"] / 2).click().perform()
        wait.until(lambda b: b.find_elements(By.ID, "star-id"))
        expected = read_catalog(sources["catalog"]).column("spectrum_id")[int(index)].as_py()
        assert browser.find_element(By.ID, "star-id").text == expected
        # its spectrum with the model fit and the residual
        wait.until(lambda b: len(b.find_elements(
            By.CSS_SELECTOR, "#star-spectrum .scatterlayer .trace")) >= 3)
        assert expected in browser.find_element(By.CSS_SELECTOR, "#star-spectrum .gtitle").text
        # a filter no star passes
        browser.find_element(By.CSS_SELECTOR, "#cat-min-snr").send_keys("100000", Keys.ENTER)
        wait.until(lambda b: "0 of 64 stars" in b.find_element(By.ID, "cat-kiel").text)

        # training: the run's curves, the sweep's trials
        browser.find_element(By.XPATH, "//*[text()='Training']").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR,
                                                 "#run-curves .scatterlayer .trace")) == 2)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR,
                                                 "#sweep-table tbody tr")) >= 3)
        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        browser.quit()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_a_star_is_traced_through_its_model(sources):
    """The fit-mode row's model fits its spectrum to the noise (S/N 100); the cINN gives
    posterior draws of every label."""
    catalog = CatalogView.open(sources["catalog"])
    table = read_catalog(sources["catalog"])
    provenance = catalog.manifest.provenance.config
    inspector = StarInspector(recorded_config(provenance, None, None))
    for index in (0, 17, 40):
        row = catalog.row(index)
        assert row["spectrum_id"] == table.column("spectrum_id")[index].as_py()
        seen = inspector.inspect(row)
        usable = np.isfinite(seen.flux)
        resid = (seen.flux - seen.model)[usable]
        # the model shown is the one the fit found: its χ² per pixel is the row's χ²_ν
        # (which divides by the pixels less the 5 fitted parameters)
        chi2 = np.mean((resid / seen.sigma[usable]) ** 2)
        print(index, chi2, row["chi2_reduced"])
        assert chi2 == pytest.approx(row["chi2_reduced"] * (1 - 5 / usable.sum()), rel=1e-3)

    cinn = make_artifact(sources["survey"], sources["root"] / "models", "cinn")
    config = recorded_config(provenance, None, cinn)
    config = config.model_copy(update={"mode": "auto"})
    seen = StarInspector(config).inspect(catalog.row(3))
    assert seen.mode == "predict" and seen.model is None
    assert seen.samples.shape == (1024, 3) and np.all(np.isfinite(seen.samples))
    assert np.all(seen.samples.std(0) > 0)


def test_the_catalog_view_filters_and_aggregates_on_the_server(tmp_path):
    rng = np.random.default_rng(0)
    n = 20_000
    teff = rng.uniform(3500, 7000, n)
    logg = rng.uniform(0.5, 5.0, n)
    fe_h = rng.normal(-0.2, 0.3, n)
    snr = rng.uniform(2, 200, n).astype(np.float32)
    flags = np.where(snr < 10, int(CatalogFlag.LOW_SNR), 0).astype(np.int32)
    flags[::7] |= int(CatalogFlag.POOR_FIT)
    writer = CatalogWriter(str(tmp_path / "cat"))
    for k, part in enumerate(np.array_split(np.arange(n), 3)):
        writer.commit(f"{k}", pa.table({
            "spectrum_id": [f"star.{i:05d}.fits" for i in part],
            "teff": teff[part], "teff_err": np.full(len(part), 50.0),
            "logg": logg[part], "logg_err": np.full(len(part), 0.1),
            "fe_h": fe_h[part], "fe_h_err": np.full(len(part), 0.05),
            "snr": snr[part], "flags": flags[part]}))
    writer.finalize(units={"teff": "K"})
    view = CatalogView.open(str(tmp_path / "cat"))
    assert list(view.labels) == ["teff", "logg", "fe_h"] and len(view) == n

    keep = view.select(Filter(min_snr=20, exclude_flags=int(CatalogFlag.POOR_FIT)))
    expected = (snr >= 20) & ((flags & int(CatalogFlag.POOR_FIT)) == 0)
    assert np.array_equal(keep, expected)
    density = view.density(keep, "teff", "logg", "fe_h", bins=(40, 30))
    inside = expected & (teff >= view.ranges["teff"][0]) & (teff <= view.ranges["teff"][1]) \
        & (logg >= view.ranges["logg"][0]) & (logg <= view.ranges["logg"][1])
    assert density.count.shape == (30, 40) and density.count.sum() == inside.sum()
    filled = density.count > 0
    assert np.all(np.isfinite(density.colour[filled])) and np.all(np.isnan(
        density.colour[~filled]))
    # the mean colour of a bin is the mean [Fe/H] of its stars
    iy, ix = np.argwhere(filled)[0]
    dx = (view.ranges["teff"][1] - view.ranges["teff"][0]) / 40
    dy = (view.ranges["logg"][1] - view.ranges["logg"][0]) / 30
    in_bin = inside & (np.floor((teff - view.ranges["teff"][0]) / dx) == ix) \
        & (np.floor((logg - view.ranges["logg"][0]) / dy) == iy)
    assert density.colour[iy, ix] == pytest.approx(fe_h[in_bin].mean())
    edges, counts = view.histogram(keep, "fe_h")
    assert counts.sum() == (expected & (fe_h >= edges[0]) & (fe_h <= edges[-1])).sum()

    # a click picks the nearest kept star; its whole row (ids with dots intact) comes back
    target = int(np.flatnonzero(expected)[123])
    found = view.nearest(keep, "teff", teff[target], "logg", logg[target])
    assert found == target
    row = view.row(found)
    assert row["spectrum_id"] == f"star.{target:05d}.fits" and row["teff"] == teff[target]
    assert view.nearest(np.zeros(n, bool), "teff", 5000.0, "logg", 4.0) is None


def test_the_emulator_view_bounds_and_exports(sources):
    emu = EmulatorView(load_artifact(sources["payne"]), "payne")
    point = emu.centre()
    flux = emu.spectrum(point)
    assert flux.shape == emu.wavelength.shape and np.all(np.isfinite(flux))
    # Cramér–Rao bounds scale as 1 / (S/N)
    at50, at100 = emu.bounds(point, 50.0), emu.bounds(point, 100.0)
    for name in LABELS:
        assert at50[name] > 0 and at50[name] == pytest.approx(2 * at100[name], rel=1e-4)
    # the downloads hold the spectrum
    fits = Table.read(io.BytesIO(emu.export(point, "fits")), format="fits")
    assert np.allclose(fits["WAVELENGTH"], emu.wavelength)
    assert np.allclose(fits["FLUX"], flux, rtol=1e-6)
    assert str(fits["WAVELENGTH"].unit) == "Angstrom"
    assert fits.meta["LABEL TEFF"] == pytest.approx(point[0])
    csv = np.loadtxt(io.StringIO(emu.export(point, "csv").decode()), delimiter=",",
                     skiprows=2)
    assert np.allclose(csv[:, 0], emu.wavelength) and np.allclose(csv[:, 1], flux, rtol=1e-6)
    # the nearest spectrum of a dataset on its grid is the one at the nearest labels
    sid, labels, neighbour = emu.neighbours(sources["survey"]).nearest(point)
    assert neighbour.shape == flux.shape and sid in dataset_ids(sources["survey"])


def test_a_missing_catalog_is_named(tmp_path):
    out = subprocess.run([sys.executable, "-m", "stellar_ray.cli", "dashboard", "--catalog",
                          str(tmp_path / "nowhere"), "--port", str(free_port())],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "no catalog here" in out.stderr and "nowhere" in out.stderr
