"""Generation rate of the built-in simulator, LRS and HRS.

    python -m benchmarks.simulate_rate [--spectra 256]

(a) one process, one thread: spectra/s per core for noiseless + noisy generation from the
Galactic prior (the figure a cluster multiplies by its cores); (b) ``simulate()`` through
Ray tasks on a local cluster of all cores, end to end including shard writing: spectra/s
per core and its ratio to (a). Prints the time one million LRS spectra take here, and (a)
against the generator before real lines (issue 16): with ~700 seeded random lines it made
18.2 LRS and 44.5 HRS spectra/s on one core of this 2-core machine; with the Gaia-ESO list
(~42,000 lines kept over the LRS range) 7.7 and 25.1.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from benchmarks.figures import report
from stellar_ray.simulation.generator import SpectrumGenerator
from stellar_ray.simulation.survey import SimulationConfig, shard_labels, simulate, simulate_batch

#: Spectra/s on one core of the generator with a seeded forest of random lines (before the
#: Gaia-ESO list), measured on this machine: the baseline of the last column.
RANDOM_LINE_RATE = {"LRS": 18.2, "HRS": 44.5}


def single_core_rate(config: SimulationConfig) -> float:
    torch.set_num_threads(1)
    generator = SpectrumGenerator(config.instrument_config())
    labels, snr, _ = shard_labels(config, 0)
    simulate_batch(generator, labels[:config.batch_size], snr[:config.batch_size], config, 0)
    start = time.perf_counter()
    simulate_batch(generator, labels, snr, config, 1)
    return len(labels) / (time.perf_counter() - start)


def ray_rate(config: SimulationConfig, cores: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        simulate(config, os.path.join(tmp, "sim"), progress=False)
        return config.total / (time.perf_counter() - start) / cores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=256)
    args = parser.parse_args(argv)
    import ray

    cores = os.cpu_count() or 1
    rows = {}
    for mode in ("LRS", "HRS"):
        config = SimulationConfig(instrument=mode, n_spectra=args.spectra,
                                  rows_per_shard=max(1, args.spectra // (2 * cores)))
        rows[mode] = [single_core_rate(config)]
        report("simulate", f"{mode} spectra, 1 core", rows[mode][0], "spectra/s",
               "random-line generator", RANDOM_LINE_RATE[mode])
    ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False)
    for mode in ("LRS", "HRS"):
        config = SimulationConfig(instrument=mode, n_spectra=args.spectra, seed=1,
                                  rows_per_shard=max(1, args.spectra // (2 * cores)))
        rows[mode].append(ray_rate(config, cores))
        report("simulate", f"{mode} spectra through Ray, per core", rows[mode][1],
               "spectra/s/core", "1 core, no Ray", rows[mode][0])
    ray.shutdown()
    print(f"{'mode':6s} {'1 core (spectra/s)':>20s} {'Ray, per core':>14s} {'ratio':>6s} "
          f"{'random-line generator':>22s} {'ratio':>6s}")
    for mode, (single, distributed) in rows.items():
        print(f"{mode:6s} {single:20.1f} {distributed:14.1f} {distributed / single:6.2f} "
              f"{RANDOM_LINE_RATE[mode]:22.1f} {single / RANDOM_LINE_RATE[mode]:6.2f}")
    hours = 1e6 / (rows["LRS"][1] * cores) / 3600
    print(f"one million LRS spectra on this machine ({cores} cores, through Ray): "
          f"{hours:.1f} h; per core-hour: {rows['LRS'][0] * 3600:,.0f} spectra")


if __name__ == "__main__":
    main()
