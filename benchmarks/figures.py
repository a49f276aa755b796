"""The figures the benchmarks measure: each printed the moment it is measured, and all of
them gathered into one table by ``python -m benchmarks`` (``make bench``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Figure:
    """One measured figure, with the baseline it is judged against (if any)."""

    benchmark: str
    name: str
    value: float
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    lower_is_better: bool = False  # times, errors

    @property
    def ratio(self) -> float | None:
        """value / baseline, or baseline / value where lower is better: above 1 is better
        than the baseline either way."""
        if not self.baseline_value or not self.value:
            return None
        if self.lower_is_better:
            return self.baseline_value / self.value
        return self.value / self.baseline_value


#: Every figure reported in this process, in order.
MEASURED: list[Figure] = []


def report(benchmark: str, name: str, value: float, unit: str, baseline: str = "",
           baseline_value: float | None = None, lower_is_better: bool = False) -> Figure:
    """Record a figure and print it at once."""
    figure = Figure(benchmark, name, float(value), unit, baseline, baseline_value,
                    lower_is_better)
    MEASURED.append(figure)
    line = f"[{benchmark}] {name}: {value:.4g} {unit}"
    if figure.ratio is not None:
        line += f"  (baseline {baseline}: {baseline_value:.4g}; ratio {figure.ratio:.2f})"
    print(line, flush=True)
    return figure


def table(figures: list[Figure]) -> str:
    """The figures as one fixed-width table."""
    head = f"{'benchmark':14s} {'figure':46s} {'value':>10s} {'unit':12s} {'baseline':38s} " \
           f"{'base value':>10s} {'ratio':>6s}"
    lines = [head, "-" * len(head)]
    for f in figures:
        base = "" if f.baseline_value is None else f"{f.baseline_value:.4g}"
        ratio = "" if f.ratio is None else f"{f.ratio:.2f}"
        lines.append(f"{f.benchmark:14s} {f.name[:46]:46s} {f.value:10.4g} {f.unit[:12]:12s} "
                     f"{f.baseline[:38]:38s} {base:>10s} {ratio:>6s}")
    return "\n".join(lines)


def best_bare_rate(loop, threads: range | None = None) -> tuple[float, int]:
    """(best rate, its thread count) of ``loop()`` (returning a rate) over torch thread
    counts 1..all: the fair baseline on machines where more threads run slower."""
    before = torch.get_num_threads()
    best = (0.0, 1)
    try:
        for n in threads or range(1, before + 1):
            torch.set_num_threads(n)
            best = max(best, (loop(), n))
    finally:
        torch.set_num_threads(before)
    return best
