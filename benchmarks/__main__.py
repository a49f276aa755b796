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
    # the zoo's slowest (TransformerPayne, the LSTMs' FLOP counts) alone take ~8 minutes
    (models_zoo, ["--only", "payne,specvit,resnet18_1d,cinn", "--batch", "256"]),
    (train_rate, ["--spectra", "1024", "--epochs", "2"]),
    # 4,096 pixels: SpecViT on the whole LRS grid (1,450 tokens) runs ~1 spectrum/s here;
    # the cINN runs ~10x faster, so its run needs ~10x the spectra to outlast its start-up
    (infer_rate, ["--models", "specvit", "--spectra", "256", "--grid", "4000:5023.75:0.25"]),
    (infer_rate, ["--models", "cinn", "--spectra", "4096", "--grid", "4000:5023.75:0.25"]),
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
