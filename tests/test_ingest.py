"""Ingestion of FITS, HDF5, NumPy and CSV spectra, and the rejects table for bad input."""

import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from stellar_ray.cli import app
from stellar_ray.errors import SpectraError
from stellar_ray.spectra.batch import SpectrumBatch
from stellar_ray.spectra.dataset import iter_shards, validate_dataset
from stellar_ray.spectra.fits_writer import image_hdul, phase3_hdul
from stellar_ray.spectra.ingest import IngestOptions, ingest
from stellar_ray.spectra.ingest.options import ReaderOptions
from stellar_ray.spectra.ingest.pipeline import REJECTS_NAME
from stellar_ray.spectra.presets import parse_grid
from stellar_ray.spectra.schema import MaskBit
from stellar_ray.spectra.units import air_to_vacuum

pytestmark = pytest.mark.timeout(180)

GRID = "5000:5100:0.5"  # 201 pixels, vacuum
WAVE = parse_grid(GRID).wavelength()


def spectrum(wave, line_at=5050.0, depth=0.5, snr=50.0, seed=0):
    rng = np.random.default_rng(seed)
    clean = 1.0 - depth * np.exp(-0.5 * ((wave - line_at) / 1.0) ** 2)
    sigma = np.full(wave.size, 1.0 / snr)
    return clean + rng.normal(0, 1, wave.size) * sigma, sigma


def run(sources, url, **kw):
    opts = IngestOptions(grid=parse_grid(GRID), flux_unit="", rows_per_shard=4,
                         files_per_task=3, **kw)
    return ingest([str(s) for s in sources], url, opts, progress=False)


def by_id(url):
    batch = SpectrumBatch.concat(list(iter_shards(url)))
    return {sid: i for i, sid in enumerate(batch.spectrum_id)}, batch


def test_phase3_tables_on_the_dataset_grid_are_kept_exactly(ray_session, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    fluxes = {}
    for i in range(7):
        f, s = spectrum(WAVE, seed=i)
        qual = np.zeros(WAVE.size, np.int32)
        qual[10] = 1
        phase3_hdul(WAVE, f, s, qual, {"OBJECT": f"star{i}", "RA": 10.0 + i, "DEC": -5.0},
                    flux_unit="").writeto(raw / f"star{i}.fits")
        fluxes[f"star{i}"] = f.astype(np.float32)
    url = str(tmp_path / "ds")
    summary = run([raw], url, survey="test", mode="HRS")
    assert (summary.spectra, summary.files, summary.rejects) == (7, 7, [])
    assert summary.shards == 3  # 3 tasks of <= 3 files, shards of <= 4 rows
    validate_dataset(url)
    index, batch = by_id(url)
    for sid, f in fluxes.items():
        row = index[sid]
        assert np.array_equal(batch.flux[row][batch.mask[row] == 0], f[batch.mask[row] == 0])
        assert batch.mask[row][10] == MaskBit.BAD_PIXEL
        assert batch.flux[row][10] == 0 and np.isinf(batch.sigma[row][10])
    assert batch.metadata["ra"][index["star3"]] == 13.0
    assert set(batch.metadata["survey"]) == {"test"} and set(batch.metadata["mode"]) == {"HRS"}
    assert np.allclose(batch.metadata["snr"], 50, rtol=0.3)


def test_air_image_is_shifted_to_vacuum_and_resampled(ray_session, tmp_path):
    wave_air = np.arange(4990.0, 5110.0, 0.3)
    f, s = spectrum(wave_air, line_at=5050.0, snr=1e4)
    image_hdul(f, wave_air[0], 0.3, s, {"OBJECT": "airstar"}, flux_unit="",
               medium="air").writeto(tmp_path / "air.fits")
    url = str(tmp_path / "ds")
    summary = run([tmp_path / "air.fits"], url)
    assert summary.spectra == 1 and summary.manifest.grid.medium == "vacuum"
    _, batch = by_id(url)
    centre = WAVE[np.argmin(batch.flux[0])]
    assert centre == pytest.approx(air_to_vacuum(np.array([5050.0]))[0], abs=0.3)
    assert centre > 5051.0  # the air -> vacuum shift is about +1.4 Å here


def test_log_linear_wcs_is_read(ray_session, tmp_path):
    loglam = np.log10(4990.0) + 2e-5 * np.arange(2400)
    wave = 10**loglam
    f, s = spectrum(wave, line_at=5030.0, snr=1e4)
    image_hdul(f, loglam[0], 2e-5, s, {"OBJECT": "logstar"}, flux_unit="", log10=True
               ).writeto(tmp_path / "log.fits")
    url = str(tmp_path / "ds")
    assert run([tmp_path / "log.fits"], url).spectra == 1
    _, batch = by_id(url)
    assert WAVE[np.argmin(batch.flux[0])] == pytest.approx(5030.0, abs=0.5)


def test_hdf5_grid_with_parameters(ray_session, tmp_path):
    n = 6
    params = np.zeros(n, dtype=[("Teff", "f8"), ("logg", "f8"), ("[M/H]", "f8")])
    params["Teff"] = np.linspace(4000, 6500, n)
    params["logg"] = 4.5
    params["[M/H]"] = -0.5
    flux = np.stack([spectrum(WAVE, seed=i)[0] for i in range(n)])
    path = tmp_path / "grid.h5"
    with h5py.File(path, "w") as h5:
        h5["wavelength"] = WAVE
        h5["wavelength"].attrs["unit"] = "Angstrom"
        h5["flux"] = flux
        h5["params"] = params
        h5.attrs["noiseless"] = True  # the grid's own statement that it holds model flux
    url = str(tmp_path / "ds")
    opts = IngestOptions(grid=parse_grid(GRID), flux_unit="", rows_per_shard=4)
    summary = ingest([str(path)], url, opts, progress=False)
    m = summary.manifest
    assert m.uncertainties == "none" and m.model_flux
    assert m.label_names == ["teff", "logg", "fe_h"]
    assert [lab.unit for lab in m.labels] == ["K", "dex", "dex"]
    index, batch = by_id(url)
    assert batch.labels["teff"][index["grid#5"]] == 6500.0
    assert (batch.sigma == 0).all() and np.array_equal(batch.model_flux, batch.flux)
    assert np.allclose(batch.flux[index["grid#2"]], flux[2], rtol=1e-6)


def test_npz_and_csv_spectra(ray_session, tmp_path):
    f, s = spectrum(WAVE)
    np.savez(tmp_path / "a.npz", wave=WAVE, flux=f, ivar=1 / s**2, teff=5777.0)
    rows = "\n".join(f"{w},{x},{e}" for w, x, e in zip(WAVE, f, s))
    (tmp_path / "b.csv").write_text("wavelength,flux,error\n" + rows + "\n")
    url = str(tmp_path / "ds")
    summary = run([tmp_path / "a.npz", tmp_path / "b.csv"], url, labels=["teff"])
    assert summary.spectra == 2 and summary.rejects == []
    index, batch = by_id(url)
    assert batch.labels["teff"][index["a"]] == 5777.0
    assert np.isnan(batch.labels["teff"][index["b"]])
    assert np.allclose(batch.sigma[index["a"]], s, rtol=1e-6)
    assert np.allclose(batch.flux[index["b"]], f, rtol=1e-6)


@pytest.fixture
def bad_inputs(tmp_path):
    """One good file and one file per kind of bad input."""
    raw = tmp_path / "raw"
    raw.mkdir()
    f, s = spectrum(WAVE)
    ok = np.zeros(WAVE.size, np.int32)

    def table(name, flux=f, sigma=s, unit="", header=None):
        phase3_hdul(WAVE, flux, sigma, ok, header or {}, flux_unit=unit
                    ).writeto(raw / f"{name}.fits")

    table("good")
    nan = f.copy()
    nan[7] = np.nan
    table("nanflux", flux=nan)
    inf = f.copy()
    inf[8] = np.inf
    table("infflux", flux=inf)
    zero = s.copy()
    zero[9] = 0.0
    table("zerosigma", sigma=zero)
    neg = s.copy()
    neg[3] = -0.1
    table("negsigma", sigma=neg)
    table("badunit", unit="blorps")
    np.savez(raw / "short.npz", wave=WAVE, flux=f[:-5], sigma=s)
    shuffled = WAVE.copy()
    shuffled[[20, 21]] = shuffled[[21, 20]]
    np.savez(raw / "unordered.npz", wave=shuffled, flux=f, sigma=s)
    (raw / "nowave.csv").write_text("flux,error\n1.0,0.1\n1.1,0.1\n")
    (raw / "truncated.fits").write_bytes((raw / "good.fits").read_bytes()[:4000])
    return raw


EXPECTED_REJECTS = {
    "nanflux": ("FLUX", "non-finite flux (nan) at 1 pixel(s), first at index 7"),
    "infflux": ("FLUX", "non-finite flux (inf) at 1 pixel(s), first at index 8"),
    "zerosigma": ("ERR_FLUX", "sigma must be finite and > 0: 0.0 at 1 pixel(s), first at "
                              "index 9"),
    "negsigma": ("ERR_FLUX", "sigma must be finite and > 0: -0.1"),
    "badunit": ("TUNIT of FLUX", "unknown unit 'blorps'"),
    "short": ("flux", "wrong array length: 196 values, the wavelength array (wave) has 201"),
    "unordered": ("wave", "wavelengths not monotonic at index 21"),
    "nowave": ("wave", "needs a header naming one of"),
    "truncated": (None, "not a readable FITS file"),
}


def test_each_bad_input_is_set_aside_with_its_reason(ray_session, bad_inputs, tmp_path):
    url = str(tmp_path / "ds")
    summary = run([bad_inputs], url)
    assert summary.spectra == 1  # good.fits
    table = pq.read_table(os.path.join(url, REJECTS_NAME)).to_pylist()
    got = {os.path.basename(r["file"]).split(".")[0].split("#")[0]: r for r in table}
    assert set(got) == set(EXPECTED_REJECTS)
    for name, (field, reason) in EXPECTED_REJECTS.items():
        assert got[name]["field"] == field, name
        assert reason in got[name]["reason"], (name, got[name]["reason"])
    validate_dataset(url)


def test_non_finite_flux_can_be_masked_instead(ray_session, bad_inputs, tmp_path):
    url = str(tmp_path / "ds")
    run([bad_inputs / "nanflux.fits"], url, mask_nonfinite=True)
    _, batch = by_id(url)
    assert batch.mask[0][7] & MaskBit.NONFINITE_INPUT
    assert np.isfinite(batch.flux).all()


def test_missing_uncertainties_are_estimated_on_request(ray_session, tmp_path):
    f, s = spectrum(WAVE, depth=0.0, snr=40.0)
    np.savez(tmp_path / "noerr.npz", wave=WAVE, flux=f)
    url = str(tmp_path / "ds")
    with pytest.raises(SpectraError, match="no uncertainties in the file"):
        run([tmp_path / "noerr.npz"], str(tmp_path / "strict"))
    run([tmp_path / "noerr.npz"], url, estimate_sigma=True)
    _, batch = by_id(url)
    assert batch.metadata["sigma_estimated"][0]
    assert np.median(batch.sigma[0]) == pytest.approx(1 / 40.0, rel=0.25)


def test_colliding_ids_are_one_error_naming_both_files(ray_session, tmp_path):
    """Two files giving one id (here through --id-key) stop the run with one error naming
    both files and suggesting --id-key / --id-pattern; nothing is left behind, so the
    corrected rerun needs no --overwrite."""
    f, s = spectrum(WAVE)
    for i in range(5):
        phase3_hdul(WAVE, f, s, np.zeros(WAVE.size, np.int32), {"OBJECT": "same"},
                    flux_unit="").writeto(tmp_path / f"x{i}.fits")
    url = str(tmp_path / "ds")
    opts = IngestOptions(grid=parse_grid(GRID), flux_unit="", files_per_task=1,
                         reader=ReaderOptions(id_key="OBJECT"))
    with pytest.raises(SpectraError) as err:
        ingest([str(tmp_path)], url, opts, progress=False)
    text = str(err.value)
    assert "spectrum id 'same' is given to two spectra" in text
    assert len(re.findall(r"x\d\.fits", text)) >= 2
    assert "--id-key" in text and "--id-pattern" in text
    assert not os.path.exists(url) or os.listdir(url) == []
    summary = run([tmp_path], url)  # default ids: the file names
    assert summary.spectra == 5


def test_cli_ingest(tmp_path):
    f, s = spectrum(WAVE)
    for i in range(3):
        phase3_hdul(WAVE, f, s, np.zeros(WAVE.size, np.int32), flux_unit=""
                    ).writeto(tmp_path / f"c{i}.fits")
    url = str(tmp_path / "ds")
    cmd = [sys.executable, "-m", "stellar_ray.cli", "ingest", str(tmp_path), "--to", url,
           "--grid", GRID, "--flux-unit", ""]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=170)
    assert out.returncode == 0, out.stderr
    assert "ingested 3 spectra from 3 files" in out.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=170)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_cli_takes_the_assumed_medium_from_the_yaml_unless_given(tmp_path, ray_session):
    """A file that does not state its medium is read as the ingest YAML says
    (reader.assume_medium: air), and as --assume-medium says when that is given."""
    wave_air = np.arange(4990.0, 5110.0, 0.3)
    f, s = spectrum(wave_air, line_at=5050.0, snr=1e4)
    hdul = image_hdul(f, wave_air[0], 0.3, s, {"OBJECT": "unstated"}, flux_unit="")
    hdul[0].header["CTYPE1"] = "LINEAR"  # no medium anywhere in the header
    hdul.writeto(tmp_path / "unstated.fits")
    (tmp_path / "ingest.yaml").write_text("reader:\n  assume_medium: air\n")
    centres = {}
    for name, extra in (("yaml", []), ("flag", ["--assume-medium", "vacuum"])):
        url = str(tmp_path / name)
        out = CliRunner().invoke(app, [
            "ingest", str(tmp_path / "unstated.fits"), "--to", url, "--grid", GRID,
            "--flux-unit", "", "--config", str(tmp_path / "ingest.yaml"), *extra])
        assert out.exit_code == 0, out.output
        _, batch = by_id(url)
        centres[name] = WAVE[np.argmin(batch.flux[0])]
    assert centres["yaml"] == pytest.approx(air_to_vacuum(np.array([5050.0]))[0], abs=0.3)
    assert centres["flag"] == pytest.approx(5050.0, abs=0.3)
