"""Run every benchmark: ``python -m benchmarks`` (``make bench``)."""

from . import io_read, simulate_rate

if __name__ == "__main__":
    for bench in (io_read, simulate_rate):
        print(f"== {bench.__name__}")
        bench.main()
