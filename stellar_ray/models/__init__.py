"""The model zoo: emulators, regressors, classical baselines and the cINN, by name."""

from .registry import CARDS, build, card, names

__all__ = ["CARDS", "build", "card", "names"]
