"""The whole HML build as one job (``python -m jobs.hml``, ``stellar-ray submit hml``):
clone a grid, then build (and optionally validate) its generator, on the cluster."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ..config_files import load_config
from .build import BuildConfig, build_generator
from .clone import CloneConfig
from .clone_job import clone_grid


class HMLJobConfig(BaseModel):
    """Where the grid, the clones and the generator live, and how each step runs."""

    model_config = ConfigDict(extra="forbid")

    grid: str = Field(description="URL of the grid dataset")
    clones: str = Field(description="URL of the clone set (resumed if unfinished)")
    generator: str = Field(description="URL of the generator artifact")
    clone: CloneConfig = Field(default_factory=CloneConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)
    cpus_per_task: float = Field(default=1.0, gt=0)
    gpus_per_task: float = Field(default=0.0, ge=0)
    storage_options: dict | None = None

    @classmethod
    def from_yaml(cls, path: str | Path) -> HMLJobConfig:
        return load_config(cls, path)


def run_hml_job(cfg: HMLJobConfig, address: str | None = None) -> dict[str, float]:
    """Clone, then build; returns the generator's figures."""
    clone_grid(cfg.grid, cfg.clones, cfg.clone, storage_options=cfg.storage_options,
               address=address, cpus_per_task=cfg.cpus_per_task,
               gpus_per_task=cfg.gpus_per_task, progress=False)
    return build_generator(cfg.clones, cfg.generator, cfg.build,
                           storage_options=cfg.storage_options, address=address)
