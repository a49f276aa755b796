"""The main job on the embedded defaults (``make demo``): local Ray, local storage.

Today it writes a handful of 4MOST-style L1 FITS files (toy spectra: a Planck continuum
with Balmer and Ca II absorption and photon-like noise, until the built-in generator
lands), ingests them onto the LRS grid with Ray, reads the dataset back through Ray Data
with a S/N filter, and prints a summary.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from .spectra.fits_writer import image_hdul, phase3_hdul
from .spectra.ingest import IngestOptions, ingest
from .spectra.presets import parse_grid
from .spectra.raydata import read_spectra

_LINES_A = (3971.2, 4102.9, 4341.7, 4862.7, 6564.6, 8500.4, 8544.4, 8664.5)  # vacuum, Å


def toy_spectrum(wave_a: np.ndarray, teff: float, rng: np.random.Generator, snr: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Flux (erg s⁻¹ cm⁻² Å⁻¹, arbitrary scale) and sigma of a toy star: Planck continuum at
    ``teff`` with Gaussian absorption lines, Gaussian noise at ``snr`` per pixel."""
    lam_cm = wave_a * 1e-8
    planck = 1.0 / (lam_cm**5 * np.expm1(1.4388 / (lam_cm * teff)))
    cont = 1e-15 * planck / planck.mean()
    depth = np.ones_like(wave_a)
    for line in _LINES_A:
        depth -= 0.5 * np.exp(-0.5 * ((wave_a - line) / 2.5) ** 2)
    clean = cont * depth
    sigma = np.full_like(clean, np.median(clean) / snr)
    return clean + rng.normal(0.0, 1.0, clean.size) * sigma, sigma


def write_demo_files(folder: Path, n: int = 24, seed: int = 1) -> list[Path]:
    """``n`` FITS files: two thirds Phase 3 tables on the LRS grid (vacuum), one third 1-D
    images at 0.3 Å in air (resampled on ingestion), and one truncated file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lrs = parse_grid("lrs").wavelength()
    coarse = np.arange(3650.0, 9550.0, 0.3)
    paths = []
    for i in range(n):
        teff, snr = rng.uniform(4000, 9000), rng.uniform(5, 80)
        header = {"OBJECT": f"demo-{i:04d}", "RA": rng.uniform(0, 360),
                  "DEC": rng.uniform(-90, 30)}
        path = folder / f"demo-{i:04d}.fits"
        if i % 3:
            flux, sigma = toy_spectrum(lrs, teff, rng, snr)
            phase3_hdul(lrs, flux, sigma, np.zeros(lrs.size, np.int32), header
                        ).writeto(path, overwrite=True)
        else:
            flux, sigma = toy_spectrum(coarse, teff, rng, snr)
            image_hdul(flux, coarse[0], 0.3, sigma, header, medium="air"
                       ).writeto(path, overwrite=True)
        paths.append(path)
    broken = folder / "demo-truncated.fits"
    broken.write_bytes(paths[1].read_bytes()[:20_000])
    return paths + [broken]


def run_demo(out: Path, console: Console) -> None:
    """Write, ingest and read back the demo survey under ``out``."""
    raw, dataset = out / "raw", out / "dataset"
    if out.exists():
        shutil.rmtree(out)
    files = write_demo_files(raw)
    console.print(f"wrote {len(files)} FITS files to {raw}")
    opts = IngestOptions(grid=parse_grid("lrs"), survey="demo", mode="LRS", overwrite=True,
                         rows_per_shard=8, files_per_task=8)
    summary = ingest([str(raw)], str(dataset), opts)
    console.print(f"ingested {summary.spectra} spectra into {summary.shards} shards at "
                  f"{dataset}; {len(summary.rejects)} file(s) set aside:")
    for r in summary.rejects:
        console.print(f"  {Path(r.file).name}: {r.reason}")
    ds = read_spectra(str(dataset), columns=["flux", "snr"], filter=[("snr", ">", 20)])
    n, flux_sum = 0, 0.0
    for batch in ds.iter_batches(batch_size=64, batch_format="numpy"):
        n += len(batch["flux"])
        flux_sum += float(batch["flux"].mean(axis=1).sum())
    table = Table(title="demo survey")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("spectra in dataset", str(summary.spectra))
    table.add_row("pixels per spectrum", str(summary.manifest.npix))
    table.add_row("read back with S/N > 20", str(n))
    table.add_row("mean flux of those", f"{flux_sum / max(n, 1):.3e} {summary.manifest.flux_unit}")
    table.add_row("dataset", str(dataset.resolve()))
    console.print(table)
