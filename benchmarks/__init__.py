"""Benchmarks: each module prints its measured figures and the ratio to its baseline."""
