"""The hybrid method of paper 001 (blase3D): pseudo-Voigt profiles, cloning a spectrum of
known lines, identifying lines across a grid, the generator at and between grid points
(linear on a rectilinear grid, RBF on an irregular one), its derivatives, and the whole
path as a user runs it: `stellar-ray simulate` a grid, `hml clone` (also killed midway and
resumed), `hml build`, `stellar-ray infer` in gp and fit modes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from stellar_ray.artifact import load_artifact
from stellar_ray.cli import app
from stellar_ray.errors import ConfigError
from stellar_ray.hml.build import BuildConfig, build_generator, identify_lines
from stellar_ray.hml.clone import CloneConfig, Cloner
from stellar_ray.hml.clone_job import clone_grid, read_clones
from stellar_ray.hml.continuum import relative_blackbody
from stellar_ray.hml.voigt import optical_depth, pseudo_voigt
from stellar_ray.simulation.fisher import fisher
from stellar_ray.simulation.labels import LABELS as ALL_LABELS
from stellar_ray.spectra.batch import SpectrumBatch
from stellar_ray.spectra.catalog import read_catalog
from stellar_ray.spectra.dataset import DatasetWriter, iter_shards
from stellar_ray.spectra.grid import ArmGrid, WavelengthGrid
from stellar_ray.spectra.manifest import LabelSpec, Manifest, Provenance

from .helpers import LABELS

pytestmark = pytest.mark.timeout(900)

WAVE = np.arange(5000.0, 5100.0, 0.05)
#: (centre Å, ln a at 5000 K / log g 3, d ln a / d u, d ln a / d v) with u = ΔTeff / 1000 K,
#: v = Δlog g; the last line fades below detection at 4000 K
LINES = [(5006.0, -2.6, 0.5, -0.2), (5015.0, -2.0, -0.4, 0.1), (5024.5, -3.0, 0.3, 0.3),
         (5033.0, -2.3, 0.2, -0.3), (5042.0, -1.8, -0.2, 0.0), (5051.5, -2.8, 0.6, 0.2),
         (5060.0, -2.2, 0.0, -0.1), (5069.0, -2.5, 0.4, 0.0), (5078.5, -1.9, -0.3, 0.2),
         (5090.0, -5.6, 1.4, 0.0)]


def run(*args: str) -> str:
    out = CliRunner().invoke(app, [str(a) for a in args])
    assert out.exit_code == 0, out.output
    return out.output


def known_lines(teff: float, logg: float) -> dict[str, np.ndarray]:
    """The true line parameters at (Teff, log g): centre, ln a, σ, γ (N,)."""
    u, v = (teff - 5000.0) / 1000.0, logg - 3.0
    mu = np.array([c for c, *_ in LINES]) + 0.02 * u
    ln_a = np.array([a + b * u + c * v + 0.1 * u * v for _, a, b, c in LINES])
    sigma = np.full(len(LINES), 0.12 + 0.02 * u)
    gamma = np.full(len(LINES), 0.03 + 0.01 * v)
    return {"mu": mu, "ln_a": ln_a, "sigma": sigma, "gamma": gamma}


def known_spectrum(teff: float, logg: float) -> np.ndarray:
    """Flux (L,) on WAVE: 2 × blackbody × a gentle slope × exp(−Σ known lines)."""
    p = {k: torch.as_tensor(v)[None] for k, v in known_lines(teff, logg).items()}
    wave = torch.as_tensor(WAVE)
    tau = optical_depth(wave, p["mu"], p["ln_a"], p["sigma"], p["gamma"], 400)[0].numpy()
    x = np.linspace(-1, 1, WAVE.size)
    bb = relative_blackbody(wave, torch.tensor([teff], dtype=torch.float64))[0].numpy()
    return 2.0 * bb * (1 + 0.03 * x - 0.01 * x**2) * np.exp(-tau)


def write_known_grid(url: Path, labels: np.ndarray) -> None:
    """A noiseless grid dataset of the known-line spectra at ``labels`` (G, 2)."""
    grid = WavelengthGrid(arms=[ArmGrid(name="a", kind="linear", start=WAVE[0], step=0.05,
                                        npix=WAVE.size)])
    manifest = Manifest(grid=grid, flux_unit="erg / (s cm2 Angstrom)", uncertainties="none",
                        labels=[LabelSpec(name="teff", unit="K"), LabelSpec(name="logg")],
                        rows_per_shard=6,
                        provenance=Provenance(producer="tests", code_version="test"))
    flux = np.stack([known_spectrum(t, g) for t, g in labels])
    batch = SpectrumBatch(spectrum_id=np.array([f"node.{i:03d}.fits" for i in
                                                range(len(labels))], dtype=object),
                          flux=flux, sigma=np.zeros_like(flux),
                          mask=np.zeros(flux.shape, np.uint8),
                          labels={"teff": labels[:, 0], "logg": labels[:, 1]})
    with DatasetWriter(str(url), manifest) as writer:
        writer.write(batch)


def test_pseudo_voigt_has_unit_area_and_its_two_limits():
    x = torch.linspace(-200, 200, 800_001, dtype=torch.float64)
    s, g = torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64)
    assert float(torch.trapezoid(pseudo_voigt(x, s, g), x)) == pytest.approx(1.0, abs=2e-3)
    gauss = torch.exp(-0.5 * (x / s) ** 2) / (s * np.sqrt(2 * np.pi))
    assert torch.allclose(pseudo_voigt(x, s, torch.zeros_like(s)), gauss, atol=1e-9)
    tiny = torch.tensor(1e-9, dtype=torch.float64)
    lorentz = g / (np.pi * (x**2 + g**2))
    assert torch.allclose(pseudo_voigt(x, tiny, g), lorentz, rtol=1e-4, atol=1e-9)


def test_clone_recovers_the_parameters_of_known_voigt_lines():
    teff, logg = 5500.0, 3.5
    flux = known_spectrum(teff, logg)
    cloner = Cloner(WAVE, [WAVE.size], CloneConfig(), blackbody=True)
    clone = cloner.clone(flux[None], np.ones((1, WAVE.size), bool), np.array([teff]))[0]
    truth = known_lines(teff, logg)
    assert len(clone.mu) == len(LINES)  # each line once, nothing spurious
    order = np.argsort(clone.mu)
    assert np.abs(clone.mu[order] - truth["mu"]).max() < 0.002  # Å: 1/25 of a pixel
    # the strong lines to a fraction of a per cent; the weak last one (3 % deep) trades
    # σ against γ within 100 epochs
    weak = np.arange(len(LINES)) == len(LINES) - 1
    limits = {"ln_a": (0.01, 0.1), "sigma": (0.01, 0.15), "gamma": (0.002, 0.02)}
    for name, (strong_limit, weak_limit) in limits.items():
        got, want = clone.__dict__[name][order], truth[name]
        err = np.abs(got / want - 1) if name == "sigma" else np.abs(got - want)
        assert np.all(err < np.where(weak, weak_limit, strong_limit)), (name, err)
    assert clone.rms < 3e-4  # in normalised flux


def test_lines_are_identified_once_per_spectrum_within_the_tolerance():
    # spectra 0-2 see a line near pixel 10 (10, 11, 10) and one at 40; spectrum 1 also
    # has a second detection at 12, which must start a line of its own
    row = np.array([0, 0, 1, 1, 1, 2, 2])
    pixel = np.array([10, 40, 11, 12, 40, 10, 41])
    line = identify_lines(row, pixel, 64, tolerance=1)
    assert line[0] == line[2] == line[5]
    assert line[1] == line[4] == line[6]
    assert line[3] not in (line[0], line[1])
    assert len(set(line.tolist())) == 3
    assert len(set(identify_lines(row, pixel, 64, tolerance=0).tolist())) == 5


@pytest.fixture(scope="module")
def known_grids(ray_session, tmp_path_factory):
    """Clone sets of the known-line spectra on a rectilinear 4 × 3 grid and at 14
    scattered points of the same domain."""
    root = tmp_path_factory.mktemp("hml-known")
    rect = np.array([(t, g) for t in (4000.0, 5000.0, 6000.0, 7000.0) for g in (2.0, 3.0, 4.0)])
    rng = np.random.default_rng(4)
    scattered = np.vstack([[[4000, 2], [4000, 4], [7000, 2], [7000, 4]],
                           np.column_stack([rng.uniform(4000, 7000, 10),
                                            rng.uniform(2, 4, 10)])])
    out = {}
    for name, labels in (("rect", rect), ("scattered", scattered)):
        write_known_grid(root / name, labels)
        clone_grid(str(root / name), str(root / f"{name}-clones"), progress=False)
        out[name] = (labels, root / f"{name}-clones")
    return root, out


def reconstruction_of_clones(clones: Path) -> dict[str, np.ndarray]:
    """Each grid spectrum rebuilt straight from its clone's line table, by id."""
    clone_set, spectra, lines = read_clones(str(clones))
    cloner = Cloner(WAVE, [WAVE.size], clone_set.config, blackbody=True)
    table, out = lines.to_pandas(), {}
    for row in spectra.to_pylist():
        mine = table[table.spectrum_id == row["spectrum_id"]]
        p = {k: torch.as_tensor(mine[k].to_numpy(np.float64))[None]
             for k in ("mu", "ln_a", "sigma", "gamma")}
        tau = optical_depth(torch.as_tensor(WAVE), p["mu"], p["ln_a"], p["sigma"],
                            p["gamma"], clone_set.config.wing_pixels)[0].numpy()
        shape = cloner.continuum_shape(np.array([row["teff"]]))[0]
        out[row["spectrum_id"]] = shape * (cloner.basis_np @ row["continuum"]) * np.exp(-tau)
    return out


@pytest.mark.parametrize(("kind", "absent"), [("rect", "vanish"), ("rect", "faint"),
                                              ("scattered", "faint")])
def test_the_generator_returns_the_grid_at_its_nodes_and_interpolates_between(
        known_grids, kind, absent):
    root, grids = known_grids
    labels, clones = grids[kind]
    url = str(root / f"{kind}-{absent}")
    figures = build_generator(str(clones), url, BuildConfig(absent=absent))
    artifact = load_artifact(url)
    artifact.verify()
    assert artifact.metadata.model_args["interpolation"] == (
        "linear" if kind == "rect" else "rbf")
    assert artifact.metadata.task == "hml" and artifact.metadata.labels[0].unit == "K"
    assert figures["lines"] == len(LINES)  # each line identified across the whole grid
    # at the nodes: the clones (but for the lines they lack, kept faint at half the
    # detection threshold), and so the grid spectra to the clones' accuracy
    rebuilt = reconstruction_of_clones(clones)
    at_nodes = artifact.emulate(labels)
    ids = [f"node.{i:03d}.fits" for i in range(len(labels))]
    faint = 0.0 if absent == "vanish" else 0.5 * CloneConfig().prominence
    for i, sid in enumerate(ids):
        np.testing.assert_allclose(at_nodes[i], rebuilt[sid], rtol=2e-4 + faint)
        truth = known_spectrum(*labels[i])
        assert np.sqrt(np.mean((at_nodes[i] / truth - 1) ** 2)) < 2e-3
    # between the nodes: closer to the truth than the nearest grid spectrum
    rng = np.random.default_rng(7)
    scale = np.array([1000.0, 1.0])
    for teff, logg in np.column_stack([rng.uniform(4300, 6700, 6), rng.uniform(2.2, 3.8, 6)]):
        truth = known_spectrum(teff, logg)
        got = artifact.emulate(np.array([[teff, logg]]))[0]
        nearest = labels[np.argmin((((labels - [teff, logg]) / scale) ** 2).sum(1))]
        err = np.sqrt(np.mean((got / truth - 1) ** 2))
        err_nearest = np.sqrt(np.mean((known_spectrum(*nearest) / truth - 1) ** 2))
        assert err < 0.5 * err_nearest, (teff, logg, err, err_nearest)


def test_an_irregular_grid_is_refused_for_linear_interpolation(known_grids):
    root, grids = known_grids
    with pytest.raises(ConfigError, match="not rectilinear.*rbf"):
        build_generator(str(grids["scattered"][1]), str(root / "refused"),
                        BuildConfig(interpolation="linear"))


def test_the_generator_is_differentiable_for_the_fisher_bounds(known_grids):
    root, grids = known_grids
    build_generator(str(grids["rect"][1]), str(root / "fisher-gen"))
    artifact = load_artifact(str(root / "fisher-gen"))
    norm, model = artifact.normalisation, artifact.model.double()
    mean, std = (torch.tensor(v, dtype=torch.float64) for v in (norm.mean, norm.std))

    def forward(labels: torch.Tensor) -> torch.Tensor:
        return model((labels[:, :2] - mean) / std)

    point = torch.tensor([[5400.0, 3.3]], dtype=torch.float64)
    result = fisher(point, 0.01, model=forward, names=["teff", "logg"])
    assert np.all(np.isfinite(result.crb)) and np.all(result.crb > 0)
    # the autodiff derivative is the finite difference's
    for k, step in ((0, 1.0), (1, 1e-3)):
        shift = torch.zeros_like(point)
        shift[0, k] = step
        fd = (forward(point + shift) - forward(point - shift)) / (2 * step)
        _, jv = torch.func.jvp(forward, (point,), (shift / step,))
        assert torch.allclose(jv, fd, rtol=1e-3, atol=1e-6 * float(fd.abs().max()))


# -- the path a user takes ------------------------------------------------------------
INSTRUMENT = {"mode": "HRSG",
              "grid": {"arms": [{"name": "g", "kind": "log10", "start": 5160.0,
                                 "step": 8.7e-6, "npix": 1400}]},
              "arms": [{"name": "g", "lo": 5160.0, "hi": 5310.0,
                        "resolving_power": 20_000.0}]}
AXES = {"teff": [4500.0, 5250.0, 6000.0, 6750.0], "logg": [2.5, 3.5, 4.5],
        "fe_h": [-0.5, 0.0]}
TYPICAL = {lab.name: lab.typical for lab in ALL_LABELS if lab.name not in LABELS}


@pytest.fixture(scope="module")
def simulated(ray_session, tmp_path_factory):
    """A rectilinear grid of the built-in generator (24 noiseless spectra, one per shard)
    and 8 noiseless stars at random labels inside it, both from `stellar-ray simulate`."""
    root = tmp_path_factory.mktemp("hml-sim")
    grid = {"instrument": INSTRUMENT, "prior": {"kind": "grid", "axes": AXES},
            "noise": False, "rows_per_shard": 1, "survey": "hml-grid", "id_prefix": "grid"}
    stars = {"instrument": INSTRUMENT, "n_spectra": 8, "seed": 11, "noise": False,
             "rows_per_shard": 4, "survey": "hml-stars", "id_prefix": "star",
             "prior": {"kind": "uniform", "fixed": TYPICAL,
                       "ranges": {k: [min(v), max(v)] for k, v in AXES.items()}}}
    for name, cfg in (("grid", grid), ("stars", stars)):
        (root / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        run("simulate", root / f"{name}.yaml", "--to", root / name)
    return root


def test_a_killed_clone_job_resumes_to_the_same_lines(simulated, tmp_path):
    """SIGKILL `stellar-ray hml clone` once two shards are committed; the rerun keeps
    them, finishes the rest, and gives the lines of an uninterrupted run."""
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "stellar_ray.cli", "hml", "clone",
                             str(simulated / "grid"), "--to", str(killed)],
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    records = killed / "_progress"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if records.exists() and len(list(records.glob("*.json"))) >= 2:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()[-2000:]
    assert not (killed / "clones.json").exists()
    time.sleep(3)  # a shard task already running may still commit
    kept = {p.name: p.stat().st_mtime_ns for p in (killed / "lines").glob("*.parquet")}
    assert 2 <= len(kept) < 24
    out = run("hml", "clone", simulated / "grid", "--to", killed)
    assert "cloned 24 spectra" in out
    assert {p.name: p.stat().st_mtime_ns for p in (killed / "lines").glob("*.parquet")
            if p.name in kept} == kept
    run("hml", "clone", simulated / "grid", "--to", simulated / "clones")
    for name in ("lines", "spectra"):
        whole = {p.name: p.read_bytes() for p in (simulated / "clones" / name).iterdir()}
        assert {p.name: p.read_bytes() for p in (killed / name).iterdir()} == whole


def test_hml_from_a_simulated_grid_to_a_catalog(simulated, tmp_path):
    clones = simulated / "clones"
    out = run("hml", "clone", simulated / "grid", "--to", clones)  # done: reused
    lines_per_spectrum = float(out.split("(")[1].split()[0])
    assert lines_per_spectrum > 50
    out = run("hml", "build", clones, "--to", tmp_path / "gen")
    assert "over 24 grid spectra" in out
    artifact = load_artifact(str(tmp_path / "gen"))
    assert artifact.metadata.model_args["interpolation"] == "linear"
    assert [lab.name for lab in artifact.metadata.labels] == LABELS

    truth = {sid: row for b in iter_shards(str(simulated / "stars"))
             for sid, row in zip(b.spectrum_id, np.column_stack([b.labels[n] for n in LABELS]))}
    # the mean |error| of snapping to the nearest grid point: a quarter of the grid step
    snapped = np.array([np.diff(v)[0] for v in AXES.values()]) / 4
    quick_gp = {"n_random": 40, "n_guided": 8}  # and the default 5 LM steps after the GP
    for mode, settings in (("gp", quick_gp),
                           ("fit", {"restarts": 2, "steps": 100, "fit_broadening": False})):
        cfg = {"model": str(tmp_path / "gen"), "data": str(simulated / "stars"),
               "to": str(tmp_path / f"catalog-{mode}"), "mode": mode, mode: settings,
               "actors": {"min_actors": 1, "max_actors": 2, "batch_size": 4}}
        (tmp_path / f"{mode}.yaml").write_text(yaml.safe_dump(cfg))
        run("infer", tmp_path / f"{mode}.yaml")
        table = read_catalog(str(tmp_path / f"catalog-{mode}")).to_pandas()
        assert sorted(table.spectrum_id) == sorted(truth)  # every star exactly once
        assert (table["flags"] == 0).all(), table["flags"]
        est = table.set_index("spectrum_id").loc[sorted(truth), LABELS].to_numpy()
        err = np.abs(est - np.array([truth[s] for s in sorted(truth)])).mean(0)
        assert np.all(err < 0.75 * snapped), (mode, err)
        assert np.all(table[[f"{n}_err" for n in LABELS]].to_numpy() > 0)

    # the Jacobian errors know nothing of the interpolation error: checked on spectra of
    # known labels, the error model's floor widens them in the mode it was measured in
    (tmp_path / "build.yaml").write_text(yaml.safe_dump(
        {"validation": {"data": str(simulated / "stars"), "infer": {"gp": quick_gp}}}))
    out = run("hml", "build", clones, "--to", tmp_path / "checked", "--config",
              tmp_path / "build.yaml")
    assert "68 % / 95 % intervals hold" in out
    calibration = load_artifact(str(tmp_path / "checked")).metadata.calibration
    assert calibration.mode == "gp" and calibration.spectra == len(truth)
    assert calibration.applied  # noiseless spectra: the formal errors miss by far
    cfg = yaml.safe_load((tmp_path / "gp.yaml").read_text())
    cfg.update(model=str(tmp_path / "checked"), to=str(tmp_path / "catalog-checked"))
    (tmp_path / "checked.yaml").write_text(yaml.safe_dump(cfg))
    run("infer", tmp_path / "checked.yaml")
    before = read_catalog(str(tmp_path / "catalog-gp")).to_pandas().set_index("spectrum_id")
    after = read_catalog(str(tmp_path / "catalog-checked")).to_pandas().set_index(
        "spectrum_id").loc[before.index]
    np.testing.assert_allclose(after[LABELS], before[LABELS])  # the same estimates
    for name, c in calibration.labels.items():
        assert (after[f"{name}_err"] >= c.floor * (1 - 1e-6)).all()
        assert (after[f"{name}_err"] > before[f"{name}_err"]).all()


def test_training_an_hml_generator_is_refused_with_the_way_to_build_it(tmp_path):
    job = tmp_path / "hml.yaml"
    job.write_text(yaml.safe_dump({"model": "hml", "output": str(tmp_path), "name": "x",
                                   "data": {"train": str(tmp_path), "labels": LABELS}}))
    out = CliRunner().invoke(app, ["train", str(job)])
    assert out.exit_code != 0
    assert "hml clone" in out.output and "hml build" in out.output
