"""``stellar-ray tune``: hyperparameter sweeps with Ray Tune (ASHA or PBT) over training runs.

Each trial runs the same Ray Train path as ``stellar-ray train`` inside a Tune function
(Ray 2.60 does not take a TorchTrainer as a Tune trainable) and reports every epoch to
Tune with its checkpoint through :mod:`.reports` (Ray's ``TuneReportCallback`` passes on
only the metrics, which leaves PBT nothing to copy). The search space is written in YAML
with dotted keys into the training configuration::

    base: {model: specvit, data: {...}, optim: {...}, scaling: {...}, output: runs}
    search:
      optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
      model_args.d: {choice: [32, 64]}
    scheduler: {kind: asha, grace_period: 1}
    num_samples: 4
    max_concurrent: 2
"""

from __future__ import annotations

import copy
import json
import os
import zlib
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import ray.train
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import tune

from ..config_files import load_config
from ..runtime import init_ray
from ..spectra.dataset import put_table
from ..spectra.storage import join, resolve, write_bytes_atomic
from .config import TrainConfig
from .history import RunHistory
from .reports import ForwardReports, fit_reporting, report_queue

#: The trial table a sweep writes under ``<output>/<name>``.
RESULTS_FILE = "results.parquet"
_SPACES = {"uniform": tune.uniform, "loguniform": tune.loguniform,
           "choice": lambda *values: tune.choice(list(values)),
           "randint": tune.randint}


class SchedulerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["asha", "pbt"] = "asha"
    grace_period: int = Field(default=1, gt=0)
    reduction_factor: float = Field(default=2.0, gt=1)
    perturbation_interval: int = Field(default=1, gt=0)
    quantile_fraction: float = Field(default=0.25, gt=0, le=0.5, description="PBT: the "
                                     "share of trials that copy the best ones")
    synch: bool = Field(default=False, description="PBT: perturb only when every trial "
                        "has reached the interval (slower, reproducible)")


class SweepConfig(BaseModel):
    """A sweep: the base training configuration, the space, the scheduler, the budget."""

    model_config = ConfigDict(extra="forbid")

    base: dict[str, Any]
    search: dict[str, dict[str, list[Any]]]
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    num_samples: int = Field(default=4, gt=0)
    max_concurrent: int = Field(default=1, gt=0)
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    name: str = "sweep"

    @field_validator("base")
    @classmethod
    def _validate_every_epoch(cls, base: dict[str, Any]) -> dict[str, Any]:
        """Tune's schedulers count reports as iterations: a trial validates and reports
        every epoch unless the base says otherwise."""
        optim = base.get("optim") or {}
        if "validate_every" not in optim:
            base = {**base, "optim": {**optim, "validate_every": 1}}
        return base

    def space(self) -> dict[str, Any]:
        out = {}
        for key, spec in self.search.items():
            (kind, args), = spec.items()
            if kind not in _SPACES:
                raise ValueError(f"search.{key}: unknown distribution '{kind}'; use one of "
                                 f"{sorted(_SPACES)}")
            out[key] = _SPACES[kind](*args)
        return out

    @classmethod
    def from_yaml(cls, path: str | Path) -> SweepConfig:
        return load_config(cls, path)


def apply(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """``base`` with each dotted key of ``params`` set."""
    out = copy.deepcopy(base)
    for key, value in params.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _trial(params: dict[str, Any], sweep: dict[str, Any]) -> None:
    """One trial: a training run whose epochs are Tune iterations. When Tune hands over a
    checkpoint (PBT's exploit step, or a retried trial), a new run continues from it."""
    from .run import prepare_run

    cfg = TrainConfig.model_validate(apply(sweep["base"], params))
    name = f"{cfg.name}-{tune.get_context().get_trial_name()}"
    restored, resume_from = tune.get_checkpoint(), None
    if restored is not None:
        name += f"-from-{zlib.crc32(restored.path.encode()):08x}"
        resume_from = ray.train.Checkpoint(restored.path, restored.filesystem)
    reports = report_queue()
    run = prepare_run(cfg.model_copy(update={"name": name}),
                      callbacks=(ForwardReports(reports),), resume_from=resume_from)

    def to_tune(metrics: dict[str, Any], checkpoint: ray.train.Checkpoint | None) -> None:
        tune.report(metrics, checkpoint=None if checkpoint is None else
                    tune.Checkpoint(checkpoint.path, checkpoint.filesystem))

    fit_reporting(run.trainer, reports, to_tune,
                  RunHistory(f"{run.storage}/{name}", cfg.data.storage_options))


def sweep(config: SweepConfig, address: str | None = None) -> dict[str, Any]:
    """Run the sweep; write the trial table (:data:`RESULTS_FILE`) and ``best.yaml`` under
    the base output; return the best trial's parameters and metrics."""
    TrainConfig.model_validate(config.base)  # fail before any trial on a bad base
    space = config.space()
    for key in config.search:
        TrainConfig.model_validate(apply(config.base, {key: space[key].sample()}))
    init_ray(address)
    if config.scheduler.kind == "asha":
        scheduler = tune.schedulers.ASHAScheduler(
            time_attr="training_iteration", grace_period=config.scheduler.grace_period,
            reduction_factor=config.scheduler.reduction_factor)
    else:
        scheduler = tune.schedulers.PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=config.scheduler.perturbation_interval,
            quantile_fraction=config.scheduler.quantile_fraction,
            synch=config.scheduler.synch,
            hyperparam_mutations=space)
    output = config.base["output"]
    # The trial function only drives its TorchTrainer: it must hold almost no CPU, or on a
    # small node the trials' own workers could never be scheduled.
    trainable = tune.with_resources(
        tune.with_parameters(_trial, sweep=config.model_dump(mode="json")), {"cpu": 0.001})
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(metric=config.metric, mode=config.mode,
                                    scheduler=scheduler, num_samples=config.num_samples,
                                    max_concurrent_trials=config.max_concurrent),
        run_config=tune.RunConfig(name=config.name, storage_path=_absolute(output)),
    )
    results = tuner.fit()
    best = results.get_best_result(metric=config.metric, mode=config.mode)
    # One row per trial from the in-memory results (Tune's own result files may be off).
    rows = []
    for r in results:
        row = {f"param/{k}": v for k, v in r.config.items()}
        row.update({k: v for k, v in (r.metrics or {}).items()
                    if isinstance(v, (int, float, str)) and not k.startswith("config")})
        row["error"] = None if r.error is None else str(r.error)[:500]
        rows.append(row)
    columns = sorted({k for row in rows for k in row})
    table = pa.table({c: pa.array([_cell(row.get(c)) for row in rows]) for c in columns})
    url = f"{output.rstrip('/')}/{config.name}"
    put_table(url, RESULTS_FILE, table)
    best_cfg = apply(config.base, best.config)
    fs, base = resolve(url)
    write_bytes_atomic(fs, join(base, "best.yaml"), yaml.safe_dump(best_cfg).encode())
    summary = {"params": best.config, "metrics": {k: v for k, v in best.metrics.items()
                                                  if isinstance(v, (int, float))},
               "trials": len(rows), "results": f"{url}/{RESULTS_FILE}",
               "best_config": f"{url}/best.yaml"}
    write_bytes_atomic(fs, join(base, "best.json"), json.dumps(summary, indent=1,
                                                                default=str).encode())
    return summary


def _cell(value: Any) -> Any:
    """Table cells: numbers as floats, everything else as text."""
    if value is None or isinstance(value, float):
        return value
    if isinstance(value, (int, bool)):
        return float(value)
    return str(value)


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)
