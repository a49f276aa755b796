"""Learning-rate schedules: linear warm-up then cosine decay (papers 002, 003), or SM-Net's
plateau schedule that shrinks learning rate and batch size together (paper 000)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from .config import OptimConfig


def lr_lambda(total_steps: int, warmup_fraction: float, min_ratio: float
              ) -> Callable[[int], float]:
    """Linear warm-up for ``warmup_fraction`` of the steps, then cosine decay to min_ratio."""
    warm = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return float(min_ratio + (1 - min_ratio) * 0.5 * (1 + np.cos(np.pi * progress)))

    return factor


@dataclass
class Plateau:
    """State of the plateau schedule and of early stopping: ``scale`` multiplies the
    learning rate, ``batch`` is the current batch size, ``stale`` counts epochs without
    improvement of the validation loss."""

    scale: float
    batch: int
    stale: int = 0
    stop: bool = False

    def update(self, improved: bool, optim: OptimConfig, epochs: int = 1) -> None:
        """After a validation that came ``epochs`` epochs after the last one: every
        ``plateau_patience`` stale epochs multiply learning rate and batch size by
        ``plateau_factor`` (never taking the batch below ``min_batch_size``, nor raising a
        batch configured smaller); stop after ``early_stop_patience`` stale epochs."""
        before = self.stale
        self.stale = 0 if improved else self.stale + epochs
        if optim.early_stop_patience is not None and self.stale >= optim.early_stop_patience:
            self.stop = True
        if optim.schedule != "plateau" or improved:
            return
        for _ in range(self.stale // optim.plateau_patience
                       - before // optim.plateau_patience):
            self.scale *= optim.plateau_factor
            self.batch = max(min(optim.min_batch_size, self.batch),
                             int(self.batch * optim.plateau_factor))

    def state(self) -> dict:
        return asdict(self)
