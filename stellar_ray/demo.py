"""The main job on the embedded defaults (``make demo``): local Ray, local storage, the
built-in generator. Everything goes under one folder (``demo-output/``):

1. simulate a 4MOST LRS-like survey for training and a separate one to catalogue (the
   4800–5300 Å window of the blue arm at R = 5000, 0.25 Å pixels: Hβ, Mg b, He I and
   many Fe lines, small enough for a few minutes of training on two cores), reddened and
   with flux-calibration errors;
2. train a small cINN conditioned on a ResNet-1D encoder with Ray Train (two workers);
3. run inference over the second survey in a Ray Data actor pool into ``catalog/``
   (posterior means, standard deviations and quantiles, quality flags, sky positions), and
   export it as ``catalog.fits`` and as a HATS catalog (``catalog-hats/``, for LSDB);
4. write ``report/``: estimates against the truth, σ_robust per S/N bin, residuals against
   S/N next to the Cramér–Rao bounds of the same spectra, the calibration of the intervals
   and a check that hot stars are not piled up at one temperature;
5. print the command that opens the catalog and the training run in the dashboard.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .inference.config import InferConfig
from .inference.pipeline import infer
from .report import HIGH_SNR, high_snr_sigma, hot_star_check, make_report
from .simulation.generator import SpectrumGenerator
from .simulation.priors import GalacticPrior, SNRSpec
from .simulation.survey import SimulationConfig, SkyRegion, simulate
from .spectra.catalog import read_catalog
from .spectra.catalog_fits import catalog_to_fits
from .spectra.catalog_hats import catalog_to_hats
from .threads import use_allotted_threads
from .training.config import TrainConfig
from .training.run import train

LABELS = ["teff", "logg", "fe_h"]
WINDOW = {"mode": "LRS",
          "grid": {"arms": [{"name": "blue", "kind": "linear", "start": 4800.0, "step": 0.25,
                             "npix": 2001}]},
          "arms": [{"name": "blue", "lo": 4800.0, "hi": 5300.0, "resolving_power": 5000.0}]}
#: Reddening and a flux calibration good to a few per cent: the continuum's slope does not
#: give Teff away, as it would on a perfect Planck continuum.
CONDITIONS = {"ebv": (0.0, 0.3), "calibration_degree": 3, "calibration_rms": 0.02}
#: Training sees three times the Galactic share of hot stars (15 %, not 5 %): with a few
#: hundred of them the network learns their temperatures instead of the hot stars' mean.
TRAIN_PRIOR = GalacticPrior(stages={"dwarf": 0.5, "subgiant": 0.1, "giant": 0.25, "hot": 0.15})
TRAIN_SURVEY = SimulationConfig.model_validate({
    "instrument": WINDOW, "n_spectra": 4096, "seed": 1, "prior": TRAIN_PRIOR,
    "snr": SNRSpec(kind="loguniform", low=10, high=150), "rows_per_shard": 512,
    "observing": CONDITIONS,
    "survey": "demo-train", "id_prefix": "train"})
#: The catalogued stars' sky: a 4MOST-like field of 100 deg² (positions only; the
#: spectra do not depend on them).
SKY = SkyRegion(ra=(150.0, 160.0), dec=(-30.0, -20.0))
CATALOG_SURVEY = TRAIN_SURVEY.model_copy(update={
    "n_spectra": 512, "seed": 2, "prior": GalacticPrior(), "rows_per_shard": 128,
    "survey": "demo-catalog", "id_prefix": "cat", "sky": SKY})
#: The cINN conditioned on a small ResNet-1D encoder: on the demo survey it reached half the
#: [Fe/H] and a third of the Teff scatter of the ConvStem+LSTM encoder in two thirds of the
#: time per epoch (validation σ_robust 0.12 dex / 66 K against 0.29 / 178 after 30 epochs).
CINN = {"condition": "resnet18_1d", "condition_config": {"widths": [16, 32, 64, 64]},
        "transforms": 4, "hidden": [64, 64]}


def train_config(out: Path, epochs: int) -> TrainConfig:
    return TrainConfig.model_validate({
        "model": "cinn", "model_args": CINN,
        "data": {"train": str(out / "survey-train"), "labels": LABELS,
                 "validation_fraction": 0.1},
        "optim": {"epochs": epochs, "batch_size": 64, "lr": 2e-3, "warmup_fraction": 0.05},
        "scaling": {"num_workers": 2, "cpus_per_worker": 0.5},
        "output": str(out / "runs"), "name": "cinn-demo"})


def run_demo(out: Path, console: Console, epochs: int = 40) -> None:
    """Everything under ``out`` (replaced)."""
    started = time.perf_counter()
    use_allotted_threads(os.cpu_count() or 1)  # the report's bounds run in this process
    if out.exists():
        shutil.rmtree(out)
    for name, cfg in (("survey-train", TRAIN_SURVEY), ("survey-catalog", CATALOG_SURVEY)):
        m = simulate(cfg, str(out / name))
        console.print(f"simulated {m.num_rows} spectra ({m.npix} pixels) at {out / name}")

    result = train(train_config(out, epochs), on_epoch=console.print)
    console.print(f"trained the cINN for {result.epochs} epochs: validation NLL "
                  f"{result.best_metrics['nll']:.3f}; artifact {result.artifact}")

    catalog = out / "catalog"
    summary = infer(InferConfig(model=result.artifact, data=str(out / "survey-catalog"),
                                to=str(catalog), samples=256,
                                quantiles=[0.025, 0.16, 0.5, 0.84, 0.975],
                                carry_columns=LABELS))
    console.print(summary.text())
    catalog_to_fits(str(catalog), str(out / "catalog.fits"))
    catalog_to_hats(str(catalog), str(out / "catalog-hats"), max_rows=128)

    generator = SpectrumGenerator(CATALOG_SURVEY.instrument_config())
    labels = make_report(str(catalog), survey=str(out / "survey-catalog"),
                         generator=generator, labels=LABELS, folder=out / "report")

    report = Table(title=f"demo survey ({time.perf_counter() - started:.0f} s)")
    for column in ("label", "σ_robust", f"σ_robust (S/N ≥ {HIGH_SNR:g})", "bias", "in 68%",
                   "in 95%", "|error| / CRB"):
        report.add_column(column, justify="right")
    for s in labels:
        report.add_row(s.name, f"{s.sigma_robust:.3g}", f"{high_snr_sigma(s):.3g}",
                       f"{s.bias:+.3g}", f"{s.coverage68:.2f}", f"{s.coverage95:.2f}",
                       f"{s.error_over_crb:.2f}")
    console.print(report)
    console.print(hot_star_check(read_catalog(str(catalog))))
    console.print(f"catalog: {catalog.resolve()} (FITS: {(out / 'catalog.fits').resolve()}; "
                  f"HATS, for lsdb.open_catalog: {(out / 'catalog-hats').resolve()})")
    console.print(f"report: {(out / 'report' / 'report.md').resolve()}")
    console.print("look at it in the browser (http://127.0.0.1:8050/): stellar-ray dashboard "
                  f"--catalog {catalog} --runs {out / 'runs'}")
