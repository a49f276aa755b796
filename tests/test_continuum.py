"""The pseudo-continuum: a smooth upper envelope per arm that lines do not drag down."""

import numpy as np

from stellar_ray.simulation.instrument import lrs_instrument
from stellar_ray.spectra.continuum import ContinuumConfig, divide_by_continuum, fit_continuum


def _lined(wave: np.ndarray, n_lines: int, rng: np.random.Generator) -> np.ndarray:
    """Relative flux (L,) on a continuum of 1 with ``n_lines`` Gaussian absorption lines
    (depth 0.05–0.7, σ 0.3–1.2 Å), about a 4MOST LRS K star's line density."""
    centres = rng.uniform(wave[0], wave[-1], n_lines)
    depth, width = rng.uniform(0.05, 0.7, n_lines), rng.uniform(0.3, 1.2, n_lines)
    tau = np.zeros_like(wave)
    for c, d, w in zip(centres, depth, width):
        near = np.abs(wave - c) < 6 * w
        tau[near] += -np.log1p(-d) * np.exp(-0.5 * ((wave[near] - c) / w) ** 2)
    return np.exp(-tau)


def test_the_continuum_of_a_tilted_lined_spectrum_is_its_tilt():
    """Lined spectra times a different smooth response per spectrum, at S/N 100: the fitted
    continuum is that response to 1 % (median over the pixels, 3 % at worst) on every arm
    of the LRS grid, with masked pixels ignored."""
    grid = lrs_instrument().pixel_grid()
    wave, arms = grid.wavelength(), [a.npix for a in grid.arms]
    rng = np.random.default_rng(0)
    flux = np.stack([_lined(wave, 1500, rng) for _ in range(3)])
    x = (wave - wave.mean()) / np.ptp(wave)
    response = np.stack([1.0 + 0.4 * x + 0.3 * x**2 * s - 0.2 * np.sin(6 * x) * s
                         for s in (1.0, -1.0, 0.5)])
    observed = flux * response * 100.0 + rng.normal(size=flux.shape)  # S/N 100, any units
    sigma = np.ones_like(observed)
    observed[:, 1000:1200], sigma[:, 1000:1200] = 0.0, np.inf  # a masked stretch
    continuum = fit_continuum(wave, observed, sigma, arms, ContinuumConfig())
    usable = np.isfinite(sigma)
    ratio = continuum[usable.all(0)[None].repeat(3, 0)].reshape(3, -1) / \
        (100.0 * response[:, usable.all(0)])
    assert np.median(np.abs(ratio - 1)) < 0.01 and np.abs(ratio - 1).max() < 0.03
    normal, normal_sigma = divide_by_continuum(wave, observed, sigma, arms, ContinuumConfig())
    assert (normal[:, 1000:1200] == 0).all() and np.isinf(normal_sigma[:, 1000:1200]).all()
    assert abs(np.median(normal[:, usable[0]]) - np.median(flux)) < 0.01
