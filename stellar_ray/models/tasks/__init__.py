"""One Task per model family: what training and inference do with a model of that family."""

from .base import Family, InferenceMode, Task
from .emulator import EmulatorTask
from .hml import HMLTask
from .posterior import PosteriorTask
from .regressor import ClassicalTask, RegressorTask

__all__ = ["ClassicalTask", "EmulatorTask", "Family", "HMLTask", "InferenceMode", "PosteriorTask",
           "RegressorTask", "Task"]
