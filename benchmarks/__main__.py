"""Run every benchmark and print one table of their figures: ``python -m benchmarks``
(``make bench``). Each benchmark prints its figures as it measures them; the sizes below keep
the whole set within 15 minutes on two cores (each module's own defaults, run alone, are
larger: ``python -m benchmarks.<name> --help``)."""

import time

from . import dashboard, hml, infer_rate, io_read, models_zoo, simulate_rate, train_rate
from .figures import MEASURED, table

#: Each benchmark with the arguments that fit the 15-minute budget.
BUDGET = (
    (io_read, ["--spectra", "2000"]),
    (simulate_rate, ["--spectra", "128"]),
    (models_zoo, ["--batch", "64"]),
    (train_rate, ["--spectra", "1024", "--epochs", "2"]),
    (infer_rate, ["--spectra", "192"]),
    (hml, ["--teff-step", "500", "--test-spectra", "48"]),
    (dashboard, []),
)

if __name__ == "__main__":
    started = time.perf_counter()
    for bench, argv in BUDGET:
        began = time.perf_counter()
        print(f"== {bench.__name__} {' '.join(argv)}", flush=True)
        bench.main(argv)
        print(f"== {bench.__name__}: {time.perf_counter() - began:.0f} s", flush=True)
    print(f"\nall benchmarks: {time.perf_counter() - started:.0f} s\n")
    print(table(MEASURED))
