"""The built-in generator: physics that behaves, instrument and noise, Fisher bounds,
sampling, and bad configurations."""

import numpy as np
import pytest
import torch

from stellar_ray.quantities import measured_snr
from stellar_ray.simulation.fisher import EFFICIENT_MEDIAN_RATIO, Nuisance, fisher, jacobian
from stellar_ray.simulation.generator import SpectrumGenerator
from stellar_ray.simulation.instrument import (
    ArmConfig,
    InstrumentConfig,
    add_noise,
)
from stellar_ray.simulation.labels import INDEX, LABELS, check_ranges, typical
from stellar_ray.simulation.linelist import build_linelist
from stellar_ray.simulation.physics import LineFormation
from stellar_ray.simulation.priors import GalacticPrior, GridPrior, SNRSpec, UniformPrior
from stellar_ray.spectra.grid import ArmGrid, WavelengthGrid

pytestmark = pytest.mark.timeout(300)


def instrument(lo, hi, step=0.05, r=20000.0, **kw):
    grid = WavelengthGrid(arms=[ArmGrid.linear_range("a", lo, hi, step)])
    return InstrumentConfig(mode="TEST", grid=grid,
                            arms=[ArmConfig(name="a", lo=lo, hi=hi, resolving_power=r)], **kw)


@pytest.fixture(scope="module")
def red():
    """6100–6800 Å (the S/N window) at R = 20,000."""
    return SpectrumGenerator(instrument(6100.0, 6800.0))


@pytest.fixture(scope="module")
def green():
    """5100–5450 Å (Mg b, Fe I) at R = 20,000."""
    return SpectrumGenerator(instrument(5100.0, 5450.0))


def equivalent_width(gen, labels, centre, half_width, inner=0.0):
    """Absorbed area (Å) within |λ − centre| in [inner, half_width], against the same star
    with no lines (line strengths zeroed)."""
    flux = gen(labels).detach().numpy()
    saved = gen.lines.line_strength, gen.lines.hydrogen_strength
    gen.lines.line_strength = gen.lines.hydrogen_strength = 0.0
    try:
        cont = gen(labels).detach().numpy()
    finally:
        gen.lines.line_strength, gen.lines.hydrogen_strength = saved
    w = gen.wave
    d = np.abs(w - centre)
    sel = (d <= half_width) & (d >= inner)
    step = np.gradient(w)[sel]
    return ((1 - flux / cont)[:, sel] * step).sum(axis=1)


def test_hotter_stars_are_bluer():
    gen = SpectrumGenerator(instrument(4000.0, 9000.0, step=1.0, r=5000.0))
    teff = [4000.0, 5500.0, 7000.0, 10000.0, 15000.0]
    flux = gen(torch.cat([typical(1, teff=t) for t in teff])).detach().numpy()
    w = gen.wave
    colour = flux[:, w < 4500].mean(axis=1) / flux[:, w > 8500].mean(axis=1)
    assert np.all(np.diff(colour) > 0), colour


def test_balmer_lines_peak_near_9000_to_10000_K():
    lines = build_linelist()
    h_only = lines.select(lines.is_hydrogen)
    gen = SpectrumGenerator(instrument(4700.0, 5030.0, step=0.1, r=5000.0))
    gen.lines = LineFormation(h_only)
    teff = np.arange(6000.0, 16001.0, 500.0)
    labels = torch.cat([typical(1, teff=t, logg=4.0) for t in teff])
    ew = equivalent_width(gen, labels, 4862.7, 150.0)
    assert 8500.0 <= teff[np.argmax(ew)] <= 10500.0, dict(zip(teff, ew.round(1)))


def test_higher_gravity_broadens_the_wings_of_mg_b(green):
    """Dwarfs' pressure-broadened wings; in giants radiative damping takes over."""
    labels = torch.cat([typical(1, teff=5200.0, logg=g) for g in (2.0, 4.6)])
    wings = equivalent_width(green, labels, 5184.6, 6.0, inner=1.0)  # Mg b 5183.6 air
    assert wings[1] > 1.3 * wings[0], wings


def test_higher_gravity_broadens_the_wings_of_h_alpha(red):
    labels = torch.cat([typical(1, teff=8500.0, logg=g) for g in (2.5, 4.5)])
    wings = equivalent_width(red, labels, 6564.6, 60.0, inner=5.0)
    assert wings[1] > 1.2 * wings[0], wings


def test_metallicity_deepens_metal_lines(green):
    labels = torch.cat([typical(1, fe_h=z) for z in (-2.0, -1.0, 0.0)])
    ew = equivalent_width(green, labels, 5372.98, 1.0)  # Fe I 5371.49 air
    assert np.all(np.diff(ew) > 0) and ew[2] > 2 * ew[0], ew


def test_calcium_abundance_moves_ca_lines_and_not_fe_lines(red):
    labels = torch.cat([typical(1, ca_fe=x) for x in (-0.3, 0.0, 0.3)])
    ca = equivalent_width(red, labels, 6163.87, 1.0)  # Ca I 6162.17 air
    fe = equivalent_width(red, labels, 6254.29, 0.5)  # Fe I 6252.56 air
    assert np.all(np.diff(ca) > 0) and ca[2] > 1.1 * ca[0], ca
    assert np.allclose(fe, fe[1], rtol=1e-3), fe


def test_lithium_line_follows_li_abundance(red):
    labels = torch.cat([typical(1, teff=5800.0, li_fe=x) for x in (0.0, 2.0)])
    ew = equivalent_width(red, labels, 6709.7, 0.6)
    assert ew[1] > 5 * max(ew[0], 1e-4), ew


def test_radial_velocity_shifts_lines(red):
    labels = torch.cat([typical(1, rv=v) for v in (0.0, 100.0)])
    flux = red(labels).detach().numpy()
    w = red.wave
    sel = (w > 6555) & (w < 6580)
    centres = w[sel][np.argmin(flux[:, sel], axis=1)]
    assert centres[1] - centres[0] == pytest.approx(6564.6 * 100 / 299792.458, abs=0.1)


def test_measured_snr_matches_the_requested_snr(red):
    labels = torch.as_tensor(GalacticPrior().sample(24, np.random.default_rng(0)))
    clean = red(labels)
    requested = torch.as_tensor(np.tile([10.0, 30.0, 100.0, 250.0], 6), dtype=torch.float64)
    flux, sigma, mask = add_noise(clean, requested, red.wave, red.instrument,
                                  torch.Generator().manual_seed(1))
    got = measured_snr(flux.numpy(), sigma.numpy(), red.wave)
    assert np.allclose(got, requested.numpy(), rtol=0.05), got / requested.numpy()
    assert np.isfinite(flux.numpy()).all()


def test_noise_model_flags_sky_lines_and_cosmic_rays():
    inst = instrument(6200.0, 6400.0, cosmic_rate_per_min=5e-4)
    gen = SpectrumGenerator(inst)
    clean = gen(typical(8))
    flux, sigma, mask = add_noise(clean, torch.full((8,), 50.0, dtype=torch.float64),
                                  gen.wave, inst, torch.Generator().manual_seed(0))
    m = mask.numpy()
    sky = (m & 4) > 0
    assert sky.any() and np.all(np.abs(gen.wave[sky.any(axis=0)] - 6302.0) < 1.0)
    cosmic = (m & 8) > 0
    assert 0.002 < cosmic.mean() < 0.02
    assert np.all(flux.numpy()[cosmic] == 0) and np.all(np.isinf(sigma.numpy()[cosmic]))


def test_reverse_mode_gradient_reaches_every_label(red):
    x = typical(1, vsini=8.0).requires_grad_(True)
    red(x).sum().backward()
    assert torch.all(x.grad != 0), x.grad


def test_autograd_jacobian_matches_finite_differences(red):
    x0 = typical(1, teff=5200.0, logg=3.0, fe_h=-0.5, vsini=8.0, rv=12.0)
    names = ["teff", "logg", "fe_h", "ca_fe", "vmic", "vsini", "rv"]
    steps = {"teff": 0.5, "logg": 1e-3, "fe_h": 1e-3, "ca_fe": 1e-3, "vmic": 1e-3,
             "vsini": 1e-2, "rv": 1e-2}
    for name in names:
        k = INDEX[name]
        col = jacobian(red, x0, [k])[..., 0]  # the forward-mode path the Fisher matrix uses
        hi, lo = x0.clone(), x0.clone()
        hi[0, k] += steps[name]
        lo[0, k] -= steps[name]
        fd = (red(hi) - red(lo)) / (2 * steps[name])
        err = torch.linalg.norm(col - fd) / torch.linalg.norm(fd)
        assert err < 1e-3, (name, float(err))


def test_cramer_rao_bound_scales_as_one_over_snr(red):
    labels = typical(2, teff=5000.0)
    flux = red(labels).detach()
    low = fisher(labels, flux / 50.0, model=red, names=["teff", "logg", "fe_h"])
    high = fisher(labels, flux / 100.0, model=red, names=["teff", "logg", "fe_h"])
    assert np.allclose(low.crb / high.crb, 2.0, rtol=1e-6)
    assert np.all(low.crb > 0) and low.crb[0, 0] < 200.0  # K at S/N 50, R = 20,000
    r2 = high.r2_ceiling({"teff": 1000.0, "logg": 1.0})
    assert np.all(r2["teff"] < 1.0) and np.all(r2["teff"] > 0.9)


def test_fisher_of_a_linear_emulator_is_exact():
    rng = np.random.default_rng(0)
    a = torch.as_tensor(rng.normal(size=(50, len(LABELS))))

    def linear(theta):
        return theta @ a.T

    sigma = rng.uniform(0.5, 2.0, 50)
    result = fisher(typical(1), sigma, model=linear)
    expected = a.numpy().T @ np.diag(1 / sigma**2) @ a.numpy()
    assert np.allclose(result.matrix[0], expected, rtol=1e-10)
    assert np.allclose(result.crb[0], np.sqrt(np.diag(np.linalg.inv(expected))), rtol=1e-8)


def test_a_free_flux_scale_bound_matches_a_monte_carlo_of_the_efficient_estimator():
    """Two arms, each with its own free flux scale: the bound on Teff, log g and [Fe/H]
    (all three fitted) is wider than with the continuum known, and it is the scatter of
    maximum-likelihood fits (from the truth) to 400 noisy copies, to 10 %
    (the Monte Carlo standard deviation itself is uncertain by 3.5 %)."""
    grid = WavelengthGrid(arms=[ArmGrid.linear_range("a", 6150.0, 6200.0, 0.25),
                                ArmGrid.linear_range("b", 6200.25, 6250.0, 0.25)])
    two = SpectrumGenerator(InstrumentConfig(mode="TEST", grid=grid, arms=[
        ArmConfig(name="a", lo=6150.0, hi=6200.0, resolving_power=5000.0),
        ArmConfig(name="b", lo=6200.25, hi=6250.0, resolving_power=5000.0)]))
    names = ["teff", "logg", "fe_h"]
    truth = typical(1, teff=5200.0).double()
    with torch.no_grad():
        flux = two(truth)
    sigma = flux / 50.0
    known = fisher(truth, sigma, model=two, names=names)
    free = fisher(truth, sigma, model=two, names=names, nuisance=Nuisance(continuum_degree=0))
    assert np.all(free.crb[0] > known.crb[0]) and not free.unconstrained.any()
    n, cols = 400, [INDEX[k] for k in names]
    noisy = flux + sigma * torch.randn(n, flux.shape[1], dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(0))
    theta, scales = truth.repeat(n, 1), torch.ones(n, 2, dtype=torch.float64)
    arm = (torch.arange(flux.shape[1]) >= 201).long()  # pixel -> arm
    # the label derivatives at the truth serve every copy (a chord Newton method: the fixed
    # point is the maximum-likelihood fit to first order in the error, which two steps
    # from the truth reach at S/N 50)
    label_jac = jacobian(two, truth, cols)
    for _ in range(2):
        with torch.no_grad():
            f = two(theta)
        continuum = scales[:, arm]
        jac = torch.cat([label_jac * continuum[..., None],
                         torch.stack([f * (arm == k) for k in (0, 1)], dim=-1)], dim=-1)
        resid = (noisy - continuum * f) / sigma
        step = torch.linalg.lstsq(jac / sigma[..., None], resid[..., None]).solution[..., 0]
        theta[:, cols] += step[:, :3]
        scales += step[:, 3:]
    scatter = theta[:, cols].std(dim=0).numpy()
    np.testing.assert_allclose(scatter, free.crb[0], rtol=0.10)
    ratio = np.median(np.abs(theta[:, cols].numpy() - truth[0, cols].numpy()) / free.crb[0], 0)
    np.testing.assert_allclose(ratio, EFFICIENT_MEDIAN_RATIO, rtol=0.15)


def test_a_label_the_spectrum_does_not_constrain_gets_an_infinite_bound():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, len(LABELS)))
    a[:, INDEX["vsini"]] = 0.0  # the flux does not depend on it
    a[:, INDEX["logg"]] = 2.0 * a[:, INDEX["teff"]]  # and only on teff + 2 logg of these

    def linear(theta):
        return theta @ torch.as_tensor(a).T

    result = fisher(typical(1), 1.0, model=linear, names=["teff", "logg", "vsini", "fe_h"])
    assert result.unconstrained[0].tolist() == [True, True, True, False]
    assert np.isinf(result.crb[0, :3]).all() and np.isfinite(result.crb[0, 3])
    alone = fisher(typical(1), 1.0, model=linear, names=["teff", "fe_h"])
    assert not alone.unconstrained.any() and np.isfinite(alone.crb).all()


def test_priors_stay_in_range_and_grids_are_complete():
    rng = np.random.default_rng(3)
    check_ranges(GalacticPrior().sample(5000, rng))
    check_ranges(UniformPrior(ranges={"teff": (4000, 5000)}).sample(100, rng))
    g = GridPrior(axes={"teff": [4000, 5000, 6000], "logg": [1.0, 4.0]}, fixed={"fe_h": -1.0})
    labels = g.sample()
    assert labels.shape == (6, len(LABELS)) and g.size == 6
    assert set(labels[:, INDEX["teff"]]) == {4000, 5000, 6000}
    assert np.all(labels[:, INDEX["fe_h"]] == -1.0)
    snr = SNRSpec(kind="magnitude", low=14, high=16, ref_mag=15, ref_snr=100).sample(1000, rng)
    assert snr.min() >= 100 * 10 ** -0.2 - 1e-9 and snr.max() <= 100 * 10**0.2 + 1e-9


@pytest.mark.parametrize("bad, message", [
    ({"prior": {"kind": "uniform", "ranges": {"teff": [1000, 5000]}}},
     "prior.ranges.teff: [1000.0, 5000.0] must lie within the generator's range "
     "[3000.0, 20000.0] K"),
    ({"prior": {"kind": "uniform", "ranges": {"colour": [0, 1]}}}, "unknown label 'colour'"),
    ({"snr": {"kind": "fixed", "value": 0}}, "snr.value: S/N must be > 0"),
    ({"instrument": "MRS"}, "unknown mode 'MRS'"),
    ({"instrument": {"mode": "UV", "grid": {"arms": [{"name": "uv", "kind": "linear",
                                                      "start": 2000, "step": 1, "npix": 500}]},
                     "arms": [{"name": "uv", "lo": 2000, "hi": 2500, "resolving_power": 5000}]}},
     "outside the range the line list covers, 3000–11000 Å"),
    ({"prior": {"kind": "grid", "axes": {"logg": [4.0, 6.0]}}}, "prior.axes.logg"),
])
def test_bad_configuration_fails_before_any_work(bad, message):
    from stellar_ray.simulation.survey import SimulationConfig

    with pytest.raises(ValueError) as info:
        SimulationConfig.model_validate({"n_spectra": 10, **bad})
    assert message in str(info.value)
