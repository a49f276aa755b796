"""The file layouts real producers write, each written here the way the producer lays it out:
PHOENIX-ACES (flux files plus the separate wavelength file), 4MOST L1 per-arm tables,
SDSS/BOSS coadds, APOGEE apStar files, and a round trip through specutils."""

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits

from stellar_ray.spectra.dataset import load_manifest, validate_dataset
from stellar_ray.spectra.ingest import IngestOptions, ingest
from stellar_ray.spectra.presets import parse_grid
from stellar_ray.spectra.schema import MaskBit
from stellar_ray.spectra.specutils_io import conform_spectra, from_specutils, to_specutils

from .test_ingest import by_id

pytestmark = pytest.mark.timeout(180)


def gaussian_line(wave, centre, fwhm, depth=0.5):
    return 1.0 - depth * np.exp(-0.5 * ((wave - centre) / (fwhm / 2.3548)) ** 2)


def test_phoenix_aces_flux_files_with_the_separate_wavelength_file(ray_session, tmp_path):
    """PHOENIX HiRes: wavelengths only in WAVE_PHOENIX-ACES-AGSS-COND-2011.fits (vacuum Å),
    flux in erg/s/cm²/cm, parameters in PHX* keywords; file names full of dots."""
    wave = np.arange(4900.0, 5200.0, 0.01)  # stand-in for the 1.5 M-pixel HiRes grid
    fits.PrimaryHDU(wave).writeto(tmp_path / "WAVE_PHOENIX-ACES-AGSS-COND-2011.fits")
    models = {(5800, 4.5, 0.0, 0.0): 0.3, (4500, 2.0, -1.0, 0.4): 0.6}
    for (teff, logg, feh, alpha), depth in models.items():
        flux = 3e15 * gaussian_line(wave, 5050.0, 0.1, depth)  # erg/s/cm²/cm
        hdu = fits.PrimaryHDU(flux.astype(np.float32))
        hdu.header.update({"PHXTEFF": teff, "PHXLOGG": logg, "PHXM_H": feh,
                           "PHXALPHA": alpha, "BUNIT": "erg/s/cm^2/cm"})
        name = f"lte{teff:05d}-{logg:.2f}{feh:+.1f}.Alpha={alpha:+.2f}.PHOENIX-ACES-AGSS-" \
               "COND-2011-HiRes.fits"
        hdu.writeto(tmp_path / name)
    url = str(tmp_path / "ds")
    opts = IngestOptions(grid=parse_grid("5000:5100:0.05"), flux_unit="erg s-1 cm-2 AA-1")
    summary = ingest([str(tmp_path)], url, opts, progress=False)
    assert (summary.files, summary.spectra, summary.rejects) == (2, 2, [])
    m = summary.manifest
    assert m.uncertainties == "none" and m.model_flux and summary.assumed_medium == 0
    assert m.label_names == ["teff", "logg", "fe_h", "alpha_fe"]
    index, batch = by_id(url)
    sid = "lte04500-2.00-1.0.Alpha=+0.40.PHOENIX-ACES-AGSS-COND-2011-HiRes"
    row = index[sid]
    assert [batch.labels[k][row] for k in m.label_names] == [4500, 2.0, -1.0, 0.4]
    # erg/s/cm²/cm -> erg/s/cm²/Å is a factor 1e-8; the line depth survives resampling
    assert batch.flux[row].max() == pytest.approx(3e7, rel=1e-5)
    assert batch.flux[row].min() / batch.flux[row].max() == pytest.approx(0.4, abs=0.05)
    assert m.resolution and m.resolution[0].resolving_power == 500_000


def test_4most_l1_per_arm_tables_join_into_one_multi_arm_row(ray_session, tmp_path):
    arms = {"BLUE": (4000.0, 4400.0), "GREEN": (5150.0, 5750.0), "RED": (6100.0, 6800.0)}
    rng = np.random.default_rng(1)
    written = {}
    hdus = [fits.PrimaryHDU(header=fits.Header({"OBJECT": "star", "AIRORVAC": "vac"}))]
    for name, (lo, hi) in reversed(arms.items()):  # arm order in the file does not matter
        wave = np.arange(lo, hi, 0.1)
        flux = 1.0 + 0.01 * rng.normal(size=wave.size)
        err = np.full(wave.size, 0.01)
        qual = np.zeros(wave.size, np.int32)
        qual[5] = 4
        written[name] = (wave, flux)
        hdus.append(fits.BinTableHDU.from_columns([
            fits.Column(name="WAVE", format=f"{wave.size}D", unit="Angstrom", array=[wave]),
            fits.Column(name="FLUX", format=f"{wave.size}E", array=[flux]),
            fits.Column(name="ERR_FLUX", format=f"{wave.size}E", array=[err]),
            fits.Column(name="QUAL", format=f"{wave.size}J", array=[qual])], name=name))
    fits.HDUList(hdus).writeto(tmp_path / "4MOST_L1_ob123_fib0042.fits")
    url = str(tmp_path / "ds")
    summary = ingest([str(tmp_path)], url, IngestOptions(flux_unit=""), progress=False)
    assert summary.spectra == 1 and summary.rejects == []
    grid = load_manifest(url).grid
    assert [a.name for a in grid.arms] == ["blue", "green", "red"]
    slices = grid.arm_slices()
    _, batch = by_id(url)
    assert batch.spectrum_id[0] == "4MOST_L1_ob123_fib0042"
    for name, (wave, flux) in written.items():
        got = batch.flux[0][slices[name.lower()]]
        assert np.allclose(grid.wavelength()[slices[name.lower()]], wave, rtol=1e-12)
        assert got[5] == 0 and batch.mask[0][slices[name.lower()]][5] == MaskBit.BAD_PIXEL
        assert np.array_equal(np.delete(got, 5), np.delete(flux.astype(np.float32), 5))


def test_sdss_boss_coadd_table(ray_session, tmp_path):
    """BOSS spec-PLATE-MJD-FIBER.fits: a COADD table, one row per pixel, log10 λ (vacuum),
    ivar = 0 where there is no data, and_mask bits, wdisp in pixels; BUNIT in the
    primary header as SDSS spells it."""
    loglam = np.log10(3600.0) + 1e-4 * np.arange(4000)
    wave = 10**loglam
    flux = 20.0 * gaussian_line(wave, 5000.0, 3.0)
    ivar = np.full(wave.size, 4.0)
    ivar[100:110] = 0.0
    and_mask = np.zeros(wave.size, np.int32)
    and_mask[200] = 1 << 23
    primary = fits.PrimaryHDU(header=fits.Header({
        "BUNIT": "1E-17 erg/cm^2/s/Ang", "PLUG_RA": 150.1, "PLUG_DEC": 2.2,
        "COEFF0": np.log10(3600.0), "COEFF1": 1e-4}))
    coadd = fits.BinTableHDU.from_columns([
        fits.Column(name="flux", format="E", array=flux),
        fits.Column(name="loglam", format="E", array=loglam),
        fits.Column(name="ivar", format="E", array=ivar),
        fits.Column(name="and_mask", format="J", array=and_mask),
        fits.Column(name="wdisp", format="E", array=np.full(wave.size, 1.1))], name="COADD")
    fits.HDUList([primary, coadd]).writeto(tmp_path / "spec-3586-55181-0001.fits")
    url = str(tmp_path / "ds")
    summary = ingest([str(tmp_path)], url, IngestOptions(), progress=False)
    assert summary.spectra == 1 and summary.rejects == [] and summary.assumed_medium == 0
    m = summary.manifest
    assert u.Unit(m.flux_unit) == 1e-17 * u.erg / u.s / u.cm**2 / u.AA
    r = 1.0 / (2.3548 * 1.1 * 1e-4 * np.log(10))  # λ/FWHM from wdisp (≈ 1,677)
    assert m.resolution[0].resolving_power == pytest.approx(r, rel=0.01)
    _, batch = by_id(url)
    assert batch.spectrum_id[0] == "spec-3586-55181-0001"
    assert batch.metadata["ra"][0] == pytest.approx(150.1)
    assert m.grid.arms[0].kind == "log10"  # its own grid, kept exactly
    bad = np.flatnonzero(batch.mask[0])
    assert bad.tolist() == [*range(100, 110), 200]
    assert np.isinf(batch.sigma[0][bad]).all()
    good = batch.mask[0] == 0
    assert np.allclose(batch.sigma[0][good], 0.5, rtol=1e-6)  # 1/√ivar
    assert np.array_equal(batch.flux[0][good], flux.astype(np.float32)[good])


def test_apogee_apstar_file(ray_session, tmp_path):
    """apStar: flux, error and bitmask as (2 + visits, 8575) images in HDUs 1-3 (row 0 the
    combined spectrum), log-linear WCS, BUNIT 'Flux (10^-17 erg/s/cm^2/Ang)'."""
    npix, nvisit = 8575, 3
    loglam = 4.179 + 6e-6 * np.arange(npix)
    wave = 10**loglam
    rows = np.stack([100.0 * gaussian_line(wave, 15770.0, 0.7, 0.4) + k for k in range(nvisit + 2)])
    err = np.full_like(rows, 2.0)
    mask = np.zeros(rows.shape, np.int32)
    mask[0, 50] = 1 << 12  # SIG_SKYLINE: informational, not a bad pixel
    mask[0, 60] = 1 << 1  # CRPIX: bad
    wcs = {"CRVAL1": 4.179, "CDELT1": 6e-6, "CRPIX1": 1, "CTYPE1": "LOG-LINEAR", "DC-FLAG": 1}
    primary = fits.PrimaryHDU(header=fits.Header({"TELESCOP": "apo25m", "OBJID":
                                                  "2M00000002+7417074", "NVISITS": nvisit}))
    flux_hdu = fits.ImageHDU(rows.astype(np.float32), header=fits.Header(
        {**wcs, "BUNIT": "Flux (10^-17 erg/s/cm^2/Ang)"}))
    err_hdu = fits.ImageHDU(err.astype(np.float32), header=fits.Header(
        {**wcs, "BUNIT": "Err (10^-17 erg/s/cm^2/Ang)"}))
    mask_hdu = fits.ImageHDU(mask, header=fits.Header(wcs))
    fits.HDUList([primary, flux_hdu, err_hdu, mask_hdu]).writeto(
        tmp_path / "apStar-dr17-2M00000002+7417074.fits")
    url = str(tmp_path / "ds")
    summary = ingest([str(tmp_path)], url, IngestOptions(), progress=False)
    assert summary.spectra == 1 and summary.rejects == [] and summary.assumed_medium == 0
    m = summary.manifest
    assert m.npix == npix and m.grid.arms[0].kind == "log10"
    assert np.allclose(m.grid.wavelength(), wave, rtol=1e-10)
    assert u.Unit(m.flux_unit) == 1e-17 * u.erg / u.s / u.cm**2 / u.AA
    assert m.resolution[0].resolving_power == 22_500
    _, batch = by_id(url)
    assert batch.spectrum_id[0] == "apStar-dr17-2M00000002+7417074"
    assert batch.metadata["object"][0] == "2M00000002+7417074"
    assert batch.mask[0][50] == 0 and batch.mask[0][60] == MaskBit.BAD_PIXEL
    keep = np.ones(npix, bool)
    keep[60] = False
    assert np.array_equal(batch.flux[0][keep], rows[0].astype(np.float32)[keep])  # row 0


def test_specutils_round_trip(ray_session, tmp_path):
    """A dataset row -> specutils Spectrum -> back onto the dataset grid: the same id,
    flux, σ, mask bits and labels."""
    from stellar_ray.spectra.fits_writer import phase3_hdul

    wave = parse_grid("5000:5100:0.5").wavelength()
    flux = gaussian_line(wave, 5050.0, 1.0)
    qual = np.zeros(wave.size, np.int32)
    qual[7] = 1
    phase3_hdul(wave, flux, np.full(wave.size, 0.02), qual, {"OBJECT": "s"},
                flux_unit="").writeto(tmp_path / "s.fits")
    url = str(tmp_path / "ds")
    ingest([str(tmp_path / "s.fits")], url, IngestOptions(labels=["teff"]), progress=False)
    m = load_manifest(url)
    _, batch = by_id(url)
    batch.labels = {"teff": np.array([5123.0])}
    spectrum = to_specutils(batch, 0, m)
    assert spectrum.spectral_axis.unit == u.AA and spectrum.mask[7]
    assert spectrum.uncertainty.array[0] == pytest.approx(0.02)
    back = conform_spectra([from_specutils(spectrum)], m)
    assert back.spectrum_id.tolist() == batch.spectrum_id.tolist()
    for name in ("flux", "sigma", "mask"):
        assert np.array_equal(getattr(back, name), getattr(batch, name)), name
    assert back.labels["teff"][0] == 5123.0
    validate_dataset(url)


def label_table():
    from astropy.table import Table

    table = Table({"ID": ["0001", "0002", "0003"], "TEFF": [5777.0, 4800.0, 99999.0],
                   "LOGG": [4.44, 2.5, 9999.0], "FEH": [0.0, -0.5, 0.1]})
    table["TEFF"].unit = "K"
    return table


@pytest.mark.parametrize("suffix,fmt", [(".csv", "ascii.csv"), (".fits", "fits"),
                                        (".vot", "votable"), (".parquet", None),
                                        (".txt", "ascii.basic")])
def test_label_catalogs_in_every_format(tmp_path, suffix, fmt):
    """CSV, FITS, VOTable, Parquet and whitespace text give the same labels; sentinels are
    nulls; numeric ids meet zero-padded ones; the table's units are kept."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stellar_ray.spectra.ingest.label_catalog import LabelCatalogOptions, read_label_catalog

    path = tmp_path / f"labels{suffix}"
    table = label_table()
    if fmt is None:
        pq.write_table(pa.table({c: list(table[c]) for c in table.colnames}), path)
    else:
        table.write(path, format=fmt)
    catalog = read_label_catalog(LabelCatalogOptions(
        path=str(path), id_column="id", label_map={"teff": "TEFF", "logg": "logg",
                                                   "fe_h": "FEH"},
        missing=[9999, 99999]))
    assert catalog.units == {"teff": "K", "logg": "dex", "fe_h": "dex"}
    _, row = catalog.lookup("2")  # '0002' in the file (or 2, where the format made it a number)
    assert catalog.labels_of(row) == {"teff": 4800.0, "logg": 2.5, "fe_h": -0.5}
    third = catalog.labels_of(catalog.lookup("0003")[1])
    assert np.isnan(third["teff"]) and np.isnan(third["logg"]) and third["fe_h"] == 0.1


def test_label_catalog_errors_name_the_file_row_and_column(tmp_path):
    from stellar_ray.errors import SpectraError
    from stellar_ray.spectra.ingest.label_catalog import LabelCatalogOptions, read_label_catalog

    path = tmp_path / "labels.txt"
    path.write_text("# id teff\n1 5000\n01 5100\n")
    with pytest.raises(SpectraError, match=r"labels.txt: row 1: field 'id': id '01' appears "
                                           r"twice \(rows 0 and 1\)"):
        read_label_catalog(LabelCatalogOptions(path=str(path), id_column="id"))
    with pytest.raises(SpectraError, match="no id column 'star'"):
        read_label_catalog(LabelCatalogOptions(path=str(path), id_column="star"))
    with pytest.raises(SpectraError, match="--label-map names column 'TEF'"):
        read_label_catalog(LabelCatalogOptions(path=str(path), id_column="id",
                                               label_map={"teff": "TEF"}))
