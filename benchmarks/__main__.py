"""Run every benchmark: ``python -m benchmarks`` (``make bench``)."""

from . import io_read

if __name__ == "__main__":
    io_read.main()
