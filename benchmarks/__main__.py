"""Run every benchmark: ``python -m benchmarks`` (``make bench``)."""

from . import dashboard, hml, infer_rate, io_read, models_zoo, simulate_rate, train_rate

if __name__ == "__main__":
    for bench in (io_read, simulate_rate, models_zoo, train_rate, infer_rate, hml,
                  dashboard):
        print(f"== {bench.__name__}")
        bench.main()
