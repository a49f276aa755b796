"""End-to-end catalog throughput of ``stellar-ray infer`` against a bare in-process loop.

    python -m benchmarks.infer_rate [--spectra 512] [--samples 256]

Two models on the full 4MOST LRS grid (23,201 pixels): SpecViT at its paper's size (4.8 M
parameters, a point regressor, no noise re-draws) and the cINN as the demo trains it (its
posterior from ``--samples`` draws per spectrum; ``--paper-cinn`` for the paper's size).
The bare loop runs the same model over the same spectra (the first ``--bare-spectra``)
already in memory as tensors, at the best of this machine's torch thread counts. The pipeline reads
the dataset from disk with checksums, runs two actors of one thread each (0.5 CPU, so that
the reads keep a share of the CPUs) and commits the catalog. Its end-to-end rate counts the
whole run, from reading the manifest to the last commit, including the start of the actor
pool (each actor loads the artifact). The marginal rate leaves that fixed cost out: the
extra spectra over the extra time of the full run against a run over 64 spectra (made
after a first, warming run over the same 64). The driver's CPU time (the process that
plans the run, runs Ray Data's executor and commits the catalog) is given per 10⁴ spectra,
against the run's wall time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
import torch

from benchmarks.figures import best_bare_rate, report
from stellar_ray.artifact import package_model
from stellar_ray.inference.config import InferConfig
from stellar_ray.inference.pipeline import infer
from stellar_ray.models import build
from stellar_ray.runtime import init_ray
from stellar_ray.spectra.batch import SpectrumBatch
from stellar_ray.spectra.dataset import DatasetWriter
from stellar_ray.spectra.grid import WavelengthGrid
from stellar_ray.spectra.manifest import LabelSpec, Manifest, Provenance
from stellar_ray.spectra.presets import lrs_grid, parse_grid

LABELS = ["teff", "logg", "fe_h"]
#: SpecViT at its paper's size; the cINN as the demo trains it (a ResNet-1D encoder), or with
#: ``--paper-cinn`` at its paper's size (its ConvStem+LSTM encoder takes ~0.8 s per LRS
#: spectrum on one core here, so 10⁴ spectra are a GPU's job).
MODELS = {"specvit": {}, "cinn": {"condition": "resnet18_1d",
                                  "condition_config": {"widths": [16, 32, 64, 64]},
                                  "transforms": 4, "hidden": [64, 64]}}


def make_data(url: str, n: int, grid: WavelengthGrid | None = None) -> dict[str, np.ndarray]:
    """``n`` spectra (random but valid) on ``grid`` (default LRS) written as a dataset;
    returns the batch."""
    rng = np.random.default_rng(0)
    grid = grid or lrs_grid()
    npix = grid.npix
    flux = (1.0 + 0.05 * rng.normal(size=(n, npix))).astype(np.float32)
    labels = {"teff": rng.uniform(4000, 7000, n), "logg": rng.uniform(1, 5, n),
              "fe_h": rng.uniform(-2, 0.5, n)}
    manifest = Manifest(grid=grid, flux_unit="", labels=[LabelSpec(name=n) for n in LABELS],
                        rows_per_shard=64,
                        provenance=Provenance(producer="benchmark", code_version="bench"))
    batch = SpectrumBatch(spectrum_id=np.array([f"s{i:06d}" for i in range(n)], dtype=object),
                          flux=flux, sigma=np.full_like(flux, 0.05),
                          mask=np.zeros(flux.shape, np.uint8), labels=labels,
                          metadata={"snr": np.full(n, 20.0, np.float32)})
    with DatasetWriter(url, manifest, overwrite=True) as w:
        w.write(batch)
    return {"flux": flux, **labels, "snr": batch.metadata["snr"]}


def make_artifact(url: str, name: str, batch: dict[str, np.ndarray], paper: bool = False,
                  grid: WavelengthGrid | None = None) -> torch.nn.Module:
    grid = grid or lrs_grid()
    args = {"n_labels": 3, "n_pix": grid.npix, **({} if paper else MODELS[name])}
    model = build(name, **args).eval()
    package_model(url, model, model_name=name, model_args=args, batch=batch, labels=LABELS,
                  grid=grid)
    return model


def bare_loop(model: torch.nn.Module, flux: np.ndarray, batch: int, samples: int) -> float:
    x = torch.as_tensor(flux)
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            if hasattr(model, "posterior"):
                model.posterior(x[i:i + batch], samples, (0.16, 0.5, 0.84))
            else:
                model(x[i:i + batch])
    return len(x) / (time.perf_counter() - start)


def pipeline(model_url: str, data: str, to: str, batch: int, samples: int
             ) -> tuple[float, float, float]:
    """(end-to-end spectra/s, seconds, the driver process's CPU seconds) of
    ``stellar-ray infer``."""
    cfg = InferConfig(model=model_url, data=data, to=to, samples=samples, noise_redraws=0,
                      actors={"min_actors": 2, "max_actors": 2, "cpus_per_actor": 0.5,
                              "threads_per_actor": 1, "batch_size": batch})
    cpu = time.process_time()  # every thread of this process: Ray Data's executor included
    summary = infer(cfg, progress=False)
    return summary.spectra_per_s, summary.seconds, time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=256)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bare-spectra", type=int, default=1024,
                        help="the bare loop's rate is taken over the first N spectra")
    parser.add_argument("--grid", default="lrs", help="lrs, hrs or START:STOP:STEP (Å)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated, of " + ", ".join(MODELS))
    parser.add_argument("--paper-cinn", action="store_true",
                        help="the cINN at its paper's size instead of the demo's")
    args = parser.parse_args(argv)
    import ray

    threads = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        grid = parse_grid(args.grid)
        data = make_data(os.path.join(tmp, "data"), args.spectra, grid)
        warm = os.path.join(tmp, "warm")
        make_data(warm, 64, grid)
        # init_ray, not a bare ray.init: Ray Train's placement-group cleaner asks the State
        # API (the dashboard) whether a run's controller lives, at the address it finds on
        # its own; init_ray serves the dashboard and tells every process this cluster's
        # address
        init_ray(num_cpus=os.cpu_count())
        for name in args.models.split(","):
            model_url = os.path.join(tmp, f"model-{name}")
            model = make_artifact(model_url, name, data, args.paper_cinn and name == "cinn",
                                  grid)
            flux = data["flux"][:args.bare_spectra]
            bare, bare_threads = best_bare_rate(
                lambda m=model, f=flux: bare_loop(m, f, args.batch, args.samples))
            report("infer_rate", f"{name}: bare loop (the best thread count)", bare,
                   "spectra/s")
            if hasattr(model, "posterior"):
                # the cost of the draws: the point estimate is the encoder and one draw
                torch.set_num_threads(bare_threads)
                with warnings.catch_warnings():  # the spread of one draw is undefined
                    warnings.simplefilter("ignore")
                    point = bare_loop(model, flux, args.batch, 1)
                report("infer_rate", f"{name}: time of {args.samples} draws / of 1",
                       point / bare, "×", "target", 1.5, lower_is_better=True)
            torch.set_num_threads(threads)
            small = [pipeline(model_url, warm, os.path.join(tmp, f"small-{name}-{i}"),
                              args.batch, args.samples)[1] for i in range(2)][-1]
            rate, seconds, driver_cpu = pipeline(model_url, os.path.join(tmp, "data"),
                                                 os.path.join(tmp, f"catalog-{name}"),
                                                 args.batch, args.samples)
            rows.append((name, bare, rate, (args.spectra - 64) / (seconds - small)))
            baseline = f"bare loop, {bare_threads} thread(s)"
            report("infer_rate", f"{name}: infer end to end", rate, "spectra/s", baseline,
                   bare)
            report("infer_rate", f"{name}: infer, marginal", rows[-1][3], "spectra/s",
                   baseline, bare)
            report("infer_rate", f"{name}: driver CPU per 10^4 spectra",
                   driver_cpu * 1e4 / args.spectra, "s", "run's wall time per 10^4",
                   seconds * 1e4 / args.spectra, lower_is_better=True)
        ray.shutdown()
    cores = os.cpu_count() or 1
    print(f"{args.spectra} spectra on '{args.grid}' ({grid.npix} px), batch {args.batch}, "
          f"cINN {args.samples} posterior draws, {threads} threads, {cores} cores")
    print(f"{'model':10s} {'bare loop /s':>13s} {'pipeline /s':>12s} {'per core':>9s} "
          f"{'ratio':>6s} {'marginal /s':>12s} {'ratio':>6s}")
    for name, bare, rate, marginal in rows:
        print(f"{name:10s} {bare:13.1f} {rate:12.1f} {rate / cores:9.1f} {rate / bare:6.2f} "
              f"{marginal:12.1f} {marginal / bare:6.2f}")


if __name__ == "__main__":
    main()
