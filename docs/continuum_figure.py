"""Draw docs/continuum.png: the pseudo-continuum normalisation on a solar-type LRS spectrum
(the built-in generator at S/N 50) times a smooth instrument response.

    .venv/bin/python docs/continuum_figure.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from stellar_ray.simulation.generator import SpectrumGenerator
from stellar_ray.simulation.instrument import lrs_instrument
from stellar_ray.simulation.labels import typical
from stellar_ray.spectra.continuum import ContinuumConfig, fit_continuum

#: Where the figure goes.
OUT = Path(__file__).with_name("continuum.png")


def main(out: Path = OUT) -> None:
    generator = SpectrumGenerator(lrs_instrument())
    wave = generator.wave
    with torch.no_grad():
        clean = generator(typical(1, teff=5200.0, logg=4.4, fe_h=0.0)).double().numpy()[0]
    x = (wave - wave.mean()) / np.ptp(wave)
    response = (1 + 0.2 * x - 0.15 * x**2) * (wave / 6000.0) ** -1.5
    rng = np.random.default_rng(0)
    sigma = clean * response / 50.0
    flux = clean * response + sigma * rng.standard_normal(wave.size)
    arms = [arm.npix for arm in generator.instrument.pixel_grid().arms]
    cfg = ContinuumConfig()
    continuum = fit_continuum(wave, flux[None], sigma[None], arms, cfg)[0]
    clean_continuum = fit_continuum(wave, clean[None], sigma[None] / response, arms, cfg)[0]
    fig = Figure(figsize=(11, 8))
    top, middle, zoom = fig.subplots(3, 1)
    top.plot(wave, flux, lw=0.3, color="0.4", label="observed: spectrum × response + noise")
    top.plot(wave, continuum, lw=1.2, color="C1", label="fitted pseudo-continuum")
    top.set(ylabel="flux", title="preprocess: {normalise: continuum} on a Teff 5200 K "
            "dwarf, 4MOST LRS arms, S/N 50, a ±20 % response × λ^−1.5")
    top.legend(fontsize=8, loc="upper right")
    for ax in (middle, zoom):
        ax.plot(wave, flux / continuum, lw=0.4, color="0.4", label="observed, normalised")
        ax.plot(wave, clean / clean_continuum, lw=0.6, color="C2", alpha=0.7,
                label="noiseless spectrum without the response, normalised the same way")
        ax.set(ylabel="flux / continuum", ylim=(0.0, 1.25))
    middle.legend(fontsize=8, loc="lower right")
    zoom.set(xlim=(5150.0, 5300.0), xlabel="wavelength [Å]")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
