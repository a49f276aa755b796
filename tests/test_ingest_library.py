"""Ingestion the way a user with a real library runs it: ~1,000 FITS files with dots in
their names, labels from a separate text catalog, noiseless grids in any format, a run that
accepts nothing, a run killed midway, and degrading the resolution."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from stellar_ray.cli import app
from stellar_ray.errors import SpectraError
from stellar_ray.spectra.dataset import load_manifest, validate_dataset
from stellar_ray.spectra.ingest import IngestOptions, ingest
from stellar_ray.spectra.ingest.pipeline import REJECTS_NAME
from stellar_ray.spectra.presets import parse_grid

from .test_ingest import GRID, WAVE, by_id, spectrum

pytestmark = pytest.mark.timeout(300)

N_LIBRARY = 1000


def cli(*args):
    out = CliRunner().invoke(app, [str(a) for a in args])
    return out.exit_code, out.output


def library_star(number: int) -> tuple[float, float, float]:
    """The (Teff, log g, [Fe/H]) of library star ``number`` (1-based)."""
    return 4000.0 + 3.0 * number, 1.0 + (number % 40) / 10.0, -2.0 + (number % 25) / 10.0


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """MILES-like: one 1-D FITS image per star named ``x_res2.50_s0001v.fits``, linear WCS,
    no error array, no medium keyword; and its catalog, whitespace text with a '#' header,
    9999 for unknown log g, keyed by the 4-digit star number. The catalog lacks stars
    981-1000 and lists 10 stars that have no file."""
    root = tmp_path_factory.mktemp("library")
    files = root / "spectra"
    files.mkdir()
    wave = np.arange(4990.0, 5110.0, 0.9)
    for k in range(1, N_LIBRARY + 1):
        flux, _ = spectrum(wave, depth=0.2 + (k % 7) / 20.0, snr=80.0, seed=k)
        hdu = fits.PrimaryHDU(flux.astype(np.float32))
        hdu.header.update({"CRVAL1": wave[0], "CDELT1": 0.9, "CRPIX1": 1, "CTYPE1": "LINEAR",
                           "OBJECT": f"HD {k}"})
        hdu.writeto(files / f"x_res2.50_s{k:04d}v.fits")
    lines = ["# A stellar library: atmospheric parameters", "#  ID    Teff     logg    FeH"]
    for k in [*range(1, 981), *range(1001, 1011)]:
        teff, logg, feh = library_star(k)
        logg = 9999 if k % 50 == 0 else logg
        lines.append(f"{k:04d}  {teff:7.1f}  {logg:6.2f}  {feh:5.2f}")
    (root / "catalog.txt").write_text("\n".join(lines) + "\n")
    return root


def test_a_library_of_files_with_dots_in_their_names(ray_session, library, tmp_path):
    """Every file is one spectrum, its id the whole name without '.fits'; then `stellar-ray
    label` joins the catalog by the 4-digit number (--id-pattern) into a new dataset with
    the right labels, nulls for the 9999s, and the counts."""
    url = tmp_path / "lib"
    code, out = cli("ingest", library / "spectra", "--to", url, "--estimate-sigma",
                    "--assume-medium", "air", "--flux-unit", "")
    assert code == 0, out
    assert f"ingested {N_LIBRARY} spectra from {N_LIBRARY} files" in out
    assert f"{N_LIBRARY} files did not state their wavelength medium" in out
    index, batch = by_id(str(url))
    assert len(index) == N_LIBRARY and "x_res2.50_s0001v" in index
    before = (url / "_manifest.json").read_bytes()

    labelled = tmp_path / "labelled"
    code, out = cli("label", url, "--from", library / "catalog.txt", "--labels-id", "ID",
                    "--label-map", "teff=Teff,logg=logg,fe_h=FeH", "--missing", "9999",
                    "--id-pattern", r"s(\d{4})v", "--to", labelled)
    assert code == 0, out
    assert "980 with a catalog row, 20 without; 10 catalog rows without a spectrum" in out
    assert (url / "_manifest.json").read_bytes() == before  # the old dataset is untouched
    m = validate_dataset(str(labelled))
    assert m.label_names == ["teff", "logg", "fe_h"]
    assert [lab.unit for lab in m.labels] == ["K", "dex", "dex"]
    index, batch = by_id(str(labelled))
    for k in (1, 50, 437, 980, 981, 1000):
        row = index[f"x_res2.50_s{k:04d}v"]
        got = [batch.labels[n][row] for n in m.label_names]
        if k > 980:
            assert np.isnan(got).all(), k
            continue
        teff, logg, feh = library_star(k)
        assert got[0] == teff and got[2] == pytest.approx(feh)
        assert np.isnan(got[1]) if k % 50 == 0 else got[1] == pytest.approx(logg)


def test_labels_joined_while_ingesting(ray_session, library, tmp_path):
    """--labels on ingest: the same join, ids cut to the star number, and the counts."""
    subset = tmp_path / "subset"
    subset.mkdir()
    for k in (1, 2, 50, 990):
        name = f"x_res2.50_s{k:04d}v.fits"
        (subset / name).write_bytes((library / "spectra" / name).read_bytes())
    url = str(tmp_path / "ds")
    code, out = cli("ingest", subset, "--to", url, "--estimate-sigma", "--flux-unit", "",
                    "--id-pattern", r"s(\d{4})v", "--labels", library / "catalog.txt",
                    "--labels-id", "id", "--missing", "9999")
    assert code == 0, out
    assert "3 spectra with a row, 1 without; 987 catalog rows without a spectrum" in out
    index, batch = by_id(url)
    assert sorted(index) == ["0001", "0002", "0050", "0990"]
    assert batch.labels["teff"][index["0002"]] == library_star(2)[0]
    assert np.isnan(batch.labels["logg"][index["0050"]])  # 9999 in the catalog
    assert np.isnan(batch.labels["teff"][index["0990"]])  # not in the catalog


def write_noiseless_grid(folder: Path, kind: str, flux: np.ndarray, teff: np.ndarray) -> Path:
    """The same 3-spectrum model grid as .npz, HDF5 or a FITS table, without uncertainties
    and without saying it is noiseless."""
    folder.mkdir()
    if kind == "npz":
        np.savez(folder / "grid.npz", wave=WAVE, flux=flux, teff=teff)
    elif kind == "hdf5":
        with h5py.File(folder / "grid.h5", "w") as h5:
            h5["wavelength"], h5["flux"] = WAVE, flux
            h5["params"] = np.array(list(zip(teff)), dtype=[("teff", "f8")])
    else:
        n = WAVE.size
        fits.HDUList([fits.PrimaryHDU(header=fits.Header({"AIRORVAC": "vac"})),
                      fits.BinTableHDU.from_columns([
                          fits.Column(name="WAVE", format=f"{n}D", array=[WAVE] * 3),
                          fits.Column(name="FLUX", format=f"{n}E", array=flux)])
                      ]).writeto(folder / "grid.fits")
    return folder


def test_noiseless_gives_the_same_dataset_from_npz_fits_and_hdf5(ray_session, tmp_path):
    flux = np.stack([spectrum(WAVE, depth=d, snr=1e9)[0] for d in (0.2, 0.4, 0.6)])
    teff = np.array([4000.0, 5000.0, 6000.0])
    batches = {}
    for kind in ("npz", "fits", "hdf5"):
        folder = write_noiseless_grid(tmp_path / kind, kind, flux, teff)
        with pytest.raises(SpectraError, match="pass --noiseless for model spectra"):
            ingest([str(folder)], str(tmp_path / f"{kind}-strict"),
                   IngestOptions(grid=parse_grid(GRID), flux_unit=""), progress=False)
        url = str(tmp_path / f"{kind}-ds")
        summary = ingest([str(folder)], url, IngestOptions(
            grid=parse_grid(GRID), flux_unit="", noiseless=True, labels=["teff"]),
            progress=False)
        m = summary.manifest
        assert m.uncertainties == "none" and m.model_flux and summary.spectra == 3
        _, batches[kind] = by_id(url)
        assert "snr" not in batches[kind].metadata or \
            all(v is None or np.isnan(v) for v in batches[kind].metadata["snr"])
    ref = batches["npz"]
    assert ref.spectrum_id.tolist() == ["grid#0", "grid#1", "grid#2"]
    for kind, batch in batches.items():
        assert batch.spectrum_id.tolist() == ref.spectrum_id.tolist(), kind
        for name in ("flux", "sigma", "mask", "model_flux"):
            assert np.array_equal(getattr(batch, name), getattr(ref, name)), (kind, name)
        assert (batch.sigma == 0).all() and np.array_equal(batch.model_flux, batch.flux)
    assert batches["hdf5"].labels["teff"].tolist() == teff.tolist()


def test_a_run_that_accepts_nothing_leaves_no_dataset(tmp_path, ray_session):
    for i in range(3):
        np.savez(tmp_path / f"bad{i}.npz", wave=WAVE, flux=spectrum(WAVE)[0])  # no sigma
    url = tmp_path / "ds"
    code, out = cli("ingest", tmp_path, "--to", url, "--grid", GRID, "--flux-unit", "")
    assert code == 2 and "no spectrum accepted, so no dataset was written" in out
    assert "3 × sigma: no uncertainties in the file" in out
    assert not url.exists() or list(url.iterdir()) == []
    code, out = cli("ingest", tmp_path, "--to", url, "--grid", GRID, "--flux-unit", "",
                    "--estimate-sigma")  # the corrected rerun needs no --overwrite
    assert code == 0 and "ingested 3 spectra" in out, out


def dataset_files(url: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(url.iterdir())
            if p.name.startswith("part-") or p.name == REJECTS_NAME}


def _settled_count(folder, pattern: str, quiet_s: float = 3.0, limit_s: float = 60.0) -> int:
    """The number of files matching ``pattern`` in ``folder`` once it has not changed for
    ``quiet_s`` seconds (a task already running when its driver is killed may still finish
    and record its chunk)."""
    count, deadline = -1, time.monotonic() + limit_s
    while time.monotonic() < deadline:
        now = len(list(folder.glob(pattern)))
        if now == count:
            return now
        count = now
        time.sleep(quiet_s)
    return count


def test_a_killed_ingest_resumes_to_the_same_bytes(tmp_path, ray_session):
    """SIGKILL the whole `stellar-ray ingest` process group once a few chunks are recorded;
    the rerun skips them and ends with the same shards, rejects and manifest (but its
    creation time) as a run that was never interrupted."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(120):
        f, s = spectrum(WAVE, seed=i)
        np.savez(raw / f"star.{i:04d}.npz", wave=WAVE, flux=f, sigma=s if i % 13 else -s)
    args = ["--grid", GRID, "--flux-unit", "", "--files-per-task", "1", "--rows-per-shard", "4"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "stellar_ray.cli", "ingest", str(raw),
                             "--to", str(killed), *args], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    records = killed / "_ingest"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if records.exists() and len(list(records.glob("chunk-*.json"))) >= 5:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()[-2000:]
    assert not (killed / "_manifest.json").exists()
    done = _settled_count(records, "chunk-*.json")
    assert 5 <= done < 120

    code, out = cli("ingest", raw, "--to", killed, *args)
    assert code == 0, out
    assert f"resumed: {done} chunks were done by an earlier run" in out
    assert not records.exists()
    whole = tmp_path / "whole"
    code, out = cli("ingest", raw, "--to", whole, *args)
    assert code == 0 and "resumed" not in out, out
    assert dataset_files(killed) == dataset_files(whole)
    manifests = [json.loads((u / "_manifest.json").read_text()) for u in (killed, whole)]
    for m in manifests:
        del m["provenance"]["created"]
    assert manifests[0] == manifests[1]
    assert load_manifest(str(whole)).num_rows == 120 - len(range(0, 120, 13))


def line_fwhm(wave: np.ndarray, flux: np.ndarray) -> float:
    """FWHM (Å) of an absorption line from the second moment of its depth profile."""
    depth = np.clip(1.0 - flux, 0.0, None)
    centre = np.sum(wave * depth) / depth.sum()
    return 2.3548 * np.sqrt(np.sum((wave - centre) ** 2 * depth) / depth.sum())


def test_degrading_a_line_of_known_width(ray_session, tmp_path):
    """A Gaussian line at R = 20,000 degraded to R = 5,000 has FWHM λ/5,000 (the difference
    kernel adds in quadrature); a target above the input's is refused, as is a spectrum
    whose resolution nobody states."""
    wave = np.arange(4990.0, 5110.0, 0.02)
    centre, r_in, r_out = 5050.0, 20_000.0, 5_000.0
    flux = 1.0 - 0.5 * np.exp(-0.5 * ((wave - centre) / (centre / r_in / 2.3548)) ** 2)
    err = np.full(wave.size, 1e-3)
    for name, header in (("stated", {"SPEC_RES": r_in}), ("silent", {})):
        hdul = fits.HDUList([fits.PrimaryHDU(flux.astype(np.float32)),
                             fits.ImageHDU(err.astype(np.float32), name="ERR")])
        hdul[0].header.update({"CRVAL1": wave[0], "CDELT1": 0.02, "CRPIX1": 1,
                               "CTYPE1": "WAVE", **header})
        hdul.writeto(tmp_path / f"{name}.fits")
    grid = parse_grid("5000:5100:0.1")
    fine = ingest([str(tmp_path / "stated.fits")], str(tmp_path / "fine"),
                  IngestOptions(grid=grid, flux_unit=""), progress=False)
    assert fine.manifest.resolution[0].resolving_power == r_in
    assert fine.manifest.resolution[0].origin == "file"
    url = str(tmp_path / "ds")
    summary = ingest([str(tmp_path / "stated.fits")], url,
                     IngestOptions(grid=grid, flux_unit="", degrade_to=r_out), progress=False)
    res = summary.manifest.resolution[0]
    assert (res.resolving_power, res.origin) == (r_out, "degraded")
    _, batch = by_id(url)
    wave_out = grid.wavelength()
    near = np.abs(wave_out - centre) < 6.0
    # the output's 0.1 Å pixels add 0.1²/12 Å² to the variance: < 0.3 % of the width
    assert line_fwhm(wave_out[near], batch.flux[0][near]) == pytest.approx(centre / r_out,
                                                                           rel=0.02)
    # the line's equivalent width is kept
    assert np.sum(1 - batch.flux[0][near]) * 0.1 == pytest.approx(
        np.sum(1 - flux) * 0.02, rel=0.01)
    with pytest.raises(SpectraError, match="cannot sharpen"):
        ingest([str(tmp_path / "stated.fits")], str(tmp_path / "sharp"),
               IngestOptions(grid=grid, flux_unit="", degrade_to=40_000.0), progress=False)
    with pytest.raises(SpectraError, match="resolution is unknown"):
        ingest([str(tmp_path / "silent.fits")], str(tmp_path / "unknown"),
               IngestOptions(grid=grid, flux_unit="", degrade_to=r_out), progress=False)
    told = ingest([str(tmp_path / "silent.fits")], str(tmp_path / "told"),
                  IngestOptions(grid=grid, flux_unit="", degrade_to=r_out,
                                fwhm=centre / r_in), progress=False)
    _, told_batch = by_id(str(tmp_path / "told"))
    # a constant FWHM is R = λ/FWHM: 20,000 at the line, so the same line comes out
    assert np.allclose(told_batch.flux[0][near], batch.flux[0][near], atol=2e-3)
    assert told.spectra == 1
