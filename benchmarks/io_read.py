"""Read throughput of ``read_spectra`` against a raw pyarrow read of the same shards.

    python -m benchmarks.io_read [--spectra 4000] [--grid lrs]

Writes a dataset of random spectra on the grid to a temporary directory, then reads all
columns back (a) with plain pyarrow in one process, one thread (the baseline), and (b)
through Ray Data on a local cluster of all cores, with and without checksum verification,
and with Ray Data's resource reservation (which ``read_spectra`` turns off). Each figure
is the fastest of three runs. Prints spectra/s and MB/s (uncompressed flux + sigma + mask)
per core, and the ratios.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq

from benchmarks.figures import report
from stellar_ray.spectra.batch import SpectrumBatch
from stellar_ray.spectra.dataset import DatasetWriter, load_manifest
from stellar_ray.spectra.manifest import LabelSpec, Manifest, Provenance
from stellar_ray.spectra.presets import parse_grid
from stellar_ray.spectra.schema import tensor_to_numpy


def make_dataset(url: str, n: int, grid: str, rows_per_shard: int) -> Manifest:
    g = parse_grid(grid)
    manifest = Manifest(grid=g, flux_unit="", labels=[LabelSpec(name="teff", unit="K")],
                        rows_per_shard=rows_per_shard,
                        provenance=Provenance(producer="benchmark", code_version="bench"))
    rng = np.random.default_rng(0)
    with DatasetWriter(url, manifest, overwrite=True) as w:
        for start in range(0, n, rows_per_shard):
            b = min(rows_per_shard, n - start)
            flux = rng.normal(1.0, 0.02, (b, g.npix)).astype(np.float32)
            w.write(SpectrumBatch(
                spectrum_id=[f"s{start + i:08d}" for i in range(b)], flux=flux,
                sigma=np.full_like(flux, 0.02), mask=(rng.random((b, g.npix)) < 0.01
                                                      ).astype(np.uint8),
                labels={"teff": rng.uniform(4000, 7000, b)},
                metadata={"snr": rng.uniform(5, 100, b)}))
    return load_manifest(url)


def raw_pyarrow(url: str, manifest: Manifest) -> int:
    """Baseline: read every shard with pyarrow, one thread, into (B, L) arrays."""
    n = 0
    for shard in manifest.shards:
        table = pq.read_table(os.path.join(url, shard.path), use_threads=False)
        flux = tensor_to_numpy(table.column("flux"))
        tensor_to_numpy(table.column("sigma"))
        tensor_to_numpy(table.column("mask"))
        n += flux.shape[0]
    return n


def ray_read(url: str, verify: bool, reserve: bool = False) -> int:
    """Iterate the whole dataset as numpy batches (one per block) in the driver;
    ``reserve``: with Ray Data's per-operator resource reservation, which read_spectra
    turns off."""
    from stellar_ray.spectra.raydata import read_spectra

    ds = read_spectra(url, verify=verify)
    ds.context.op_resource_reservation_enabled = reserve
    n = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        n += batch["flux"].shape[0]
    return n


def timed(fn, *args, repeats: int = 3) -> tuple[int, float]:
    """(items, seconds) of the fastest of ``repeats`` runs: single runs of a second or two
    vary by ±30 % on a shared 2-core machine."""
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        n = fn(*args)
        seconds = time.perf_counter() - start
        best = (n, seconds) if best is None or seconds < best[1] else best
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectra", type=int, default=4000)
    parser.add_argument("--grid", default="lrs")
    parser.add_argument("--rows-per-shard", type=int, default=250)
    args = parser.parse_args(argv)

    import ray

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        url = os.path.join(tmp, "bench")
        manifest = make_dataset(url, args.spectra, args.grid, args.rows_per_shard)
        mb_per_spectrum = manifest.npix * 9 / 1e6  # float32 flux + sigma, uint8 mask
        on_disk = sum(s.bytes for s in manifest.shards) / 1e6
        print(f"dataset: {args.spectra} spectra x {manifest.npix} pixels, "
              f"{len(manifest.shards)} shards, {on_disk:.0f} MB on disk "
              f"({args.spectra * mb_per_spectrum:.0f} MB in memory)")
        raw_pyarrow(url, manifest)  # warm the page cache
        results = {}

        def measured(name: str, fn, *fn_args, used: int) -> None:
            n, seconds = timed(fn, *fn_args)
            results[name] = (n, seconds, used)
            base = results["raw pyarrow (1 core)"]
            report("io_read", name, n / seconds / used, "spectra/s/core",
                   "raw pyarrow, 1 core", base[0] / base[1])

        measured("raw pyarrow (1 core)", raw_pyarrow, url, manifest, used=1)
        ray.init(address="local", num_cpus=cores, include_dashboard=False,
                 log_to_driver=False)
        ray_read(url, False)  # warm up workers
        measured(f"read_spectra verify ({cores} cores)", ray_read, url, True, used=cores)
        measured(f"read_spectra no verify ({cores} cores)", ray_read, url, False, used=cores)
        # Ray Data's per-operator resource reservation runs about one read task at a time on
        # a 2-CPU node; read_spectra turns it off
        measured(f"read_spectra verify, reservation ({cores})", ray_read, url, True, True,
                 used=cores)
        ray.shutdown()
    base = None
    print(f"{'reader':34s} {'spectra/s/core':>15s} {'MB/s/core':>10s} {'ratio':>7s}")
    for name, (n, seconds, used) in results.items():
        rate = n / seconds / used
        base = base or rate
        print(f"{name:34s} {rate:15.0f} {rate * mb_per_spectrum:10.0f} {rate / base:7.2f}")


if __name__ == "__main__":
    main()
