"""Training throughput through Ray Train against a bare single-process PyTorch loop.

    python -m benchmarks.train_rate [--spectra 2048] [--epochs 3] [--overhead 1000,100000]

The same model (SpecViT, D = 64, 2 layers, on 1,024-pixel spectra), data and batch size:
(a) a plain loop over in-memory tensors in this process, with all threads and with one
(a Ray worker of one CPU runs one thread); (b) ``stellar-ray train`` with one
worker; (c) with two workers (0.5 CPU each, so that Ray Data keeps a core). Throughput is
training spectra per second during the epochs (the mean of the last epochs, set-up
excluded), and the end-to-end time of each run is printed too.

Epoch overhead (``--overhead``): a small Payne (128-128) on 256-pixel spectra, one worker,
datasets of the given sizes (held in the worker's memory), validating every epoch and
at the default interval (``validate_every: auto``); an epoch's wall time (from one
validation interval's start to the next's over its epochs: reading, validation, checkpoint
and report included) against its compute (the steps' own time), as the ratio
wall ÷ compute. The target is at most 1.5.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from benchmarks.figures import report
from stellar_ray.models import build
from stellar_ray.runtime import init_ray
from stellar_ray.spectra.batch import SpectrumBatch
from stellar_ray.spectra.dataset import DatasetWriter
from stellar_ray.spectra.grid import ArmGrid, WavelengthGrid
from stellar_ray.spectra.manifest import LabelSpec, Manifest, Provenance
from stellar_ray.training.config import TrainConfig

NPIX, MODEL = 1024, {"d": 64, "heads": 4, "layers": 2}


def make_data(url: str, n: int, npix: int = NPIX) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.normal(size=(n, 3))
    flux = (1.0 + 0.1 * np.tanh(labels @ rng.normal(size=(3, npix)))
            + 0.01 * rng.normal(size=(n, npix))).astype(np.float32)
    grid = WavelengthGrid(arms=[ArmGrid(name="a", kind="linear", start=5000.0, step=0.5,
                                        npix=npix)])
    manifest = Manifest(grid=grid, flux_unit="", labels=[LabelSpec(name=f"y{i}")
                                                         for i in range(3)],
                        rows_per_shard=256,
                        provenance=Provenance(producer="benchmark", code_version="bench"))
    with DatasetWriter(url, manifest, overwrite=True) as w:
        w.write(SpectrumBatch(spectrum_id=[f"s{i}" for i in range(n)], flux=flux,
                              sigma=np.full_like(flux, 0.01), mask=np.zeros(flux.shape),
                              labels={f"y{i}": labels[:, i] for i in range(3)}))
    return flux, labels


def bare_loop(flux: np.ndarray, labels: np.ndarray, epochs: int, batch: int,
              threads: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build("specvit", n_labels=3, n_pix=NPIX, **MODEL)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.as_tensor(flux), torch.as_tensor(labels, dtype=torch.float32)
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            loss = (model(x[i:i + batch]) - y[i:i + batch]).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        rates.append(len(x) / (time.perf_counter() - start))
    return float(np.mean(rates[1:] if len(rates) > 1 else rates))


def ray_run(url: str, out: str, workers: int, epochs: int, batch: int) -> tuple[float, float]:
    from stellar_ray.training.run import train

    cfg = TrainConfig.model_validate({
        "model": "specvit", "model_args": MODEL,
        "data": {"train": url, "labels": ["y0", "y1", "y2"], "validation_fraction": 0.05},
        "optim": {"epochs": epochs, "batch_size": batch, "lr": 1e-3},
        "scaling": {"num_workers": workers, "cpus_per_worker": 1.0 if workers == 1 else 0.5},
        "output": out, "name": f"bench-{workers}"})
    start = time.perf_counter()
    result = train(cfg)
    total = time.perf_counter() - start
    rates = [m["train_spectra_per_s"] for m in result.history]
    return float(np.mean(rates[1:] if len(rates) > 1 else rates)), total


def overhead_run(url: str, out: str, n: int, validate_every: int | str
                 ) -> tuple[float, float]:
    """(mean epoch wall time, mean epoch compute time) in s of a small Payne, one worker,
    over three validation intervals."""
    from stellar_ray.training.config import OptimConfig
    from stellar_ray.training.run import train

    optim = {"batch_size": 256, "lr": 1e-3, "validate_every": validate_every}
    epochs = 3 * OptimConfig(**optim).validation_interval(round(0.9 * n))
    cfg = TrainConfig.model_validate({
        "model": "payne", "model_args": {"hidden": [128, 128]},
        "data": {"train": url, "labels": ["y0", "y1", "y2"], "validation_fraction": 0.1},
        "optim": {**optim, "epochs": epochs},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1.0}, "keep_checkpoints": epochs,
        "output": out, "name": f"overhead-{os.path.basename(url)}-{validate_every}"})
    history = train(cfg).history
    wall = [m["previous_wall_s_per_epoch"] for m in history
            if "previous_wall_s_per_epoch" in m]
    compute = [m["epoch_compute_s"] for m in history[:-1]]
    return float(np.mean(wall)), float(np.mean(compute))


def overhead(sizes: list[int]) -> None:
    from stellar_ray.runtime import init_ray

    init_ray(num_cpus=os.cpu_count())
    print(f"{'spectra':>8s} {'validate_every':>15s} {'epoch wall s':>13s} {'compute s':>10s} "
          f"{'wall/compute':>13s}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            url = os.path.join(tmp, f"data{n}")
            make_data(url, n, npix=256)
            for every in (1, "auto"):
                wall, compute = overhead_run(url, os.path.join(tmp, "runs"), n, every)
                print(f"{n:8d} {every!s:>15s} {wall:13.3f} {compute:10.3f} "
                      f"{wall / compute:13.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--overhead", help="comma-separated dataset sizes: measure epoch "
                        "wall time against compute instead")
    args = parser.parse_args(argv)
    import ray

    if args.overhead:
        overhead([int(x) for x in args.overhead.split(",")])
        return

    with tempfile.TemporaryDirectory() as tmp:
        url = os.path.join(tmp, "data")
        flux, labels = make_data(url, args.spectra)
        threads = torch.get_num_threads()
        bare = bare_loop(flux, labels, args.epochs, args.batch, threads)
        bare_one = bare_loop(flux, labels, args.epochs, args.batch, 1)
        torch.set_num_threads(threads)
        best, best_threads = max((bare, threads), (bare_one, 1))
        report("train_rate", "bare PyTorch loop (the best thread count)", best,
               "spectra/s")
        # init_ray, not a bare ray.init: Ray Train's placement-group cleaner asks the State
        # API (the dashboard) whether a run's controller lives, at the address it finds on
        # its own; init_ray serves the dashboard and tells every process this cluster's
        # address
        init_ray(num_cpus=os.cpu_count())
        baseline = f"bare loop, {best_threads} thread(s)"
        one = ray_run(url, os.path.join(tmp, "runs"), 1, args.epochs, args.batch)
        report("train_rate", "Ray Train, 1 worker", one[0], "spectra/s", baseline, best)
        two = ray_run(url, os.path.join(tmp, "runs"), 2, args.epochs, args.batch)
        report("train_rate", "Ray Train, 2 workers × 0.5 CPU", two[0], "spectra/s", baseline,
               best)
        ray.shutdown()
    print(f"{'run':28s} {'spectra/s':>10s} {'ratio':>6s} {'end-to-end s':>13s}")
    print(f"{f'bare PyTorch loop, {threads} threads':28s} {bare:10.1f} {1.0:6.2f}")
    print(f"{'bare PyTorch loop, 1 thread':28s} {bare_one:10.1f} {bare_one / bare:6.2f}")
    for name, (rate, total) in (("Ray Train, 1 worker", one), ("Ray Train, 2 workers", two)):
        print(f"{name:28s} {rate:10.1f} {rate / bare:6.2f} {total:13.1f}")


if __name__ == "__main__":
    main()
