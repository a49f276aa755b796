"""stellar-ray: machine-learning stellar spectroscopy at survey scale on Ray.

The public API, one flow from spectra to catalogs::

    import stellar_ray as sr

    sr.simulate(sr.SimulationConfig(...), "data/survey")          # or sr.ingest([...], ...)
    result = sr.train("jobs/configs/train-cinn-small.yaml")        # or a TrainConfig / dict
    artifact = sr.load_artifact(result.artifact)
    summary = sr.infer({"model": result.artifact, "data": "data/survey", "to": "catalog"})
    table = sr.read_catalog("catalog")

The verbs are functions here; the packages behind them are named for what they hold
(``stellar_ray.simulation``, ``.training``, ``.inference``), so that no import of a
submodule replaces a function of this facade.
"""

import importlib
from typing import TYPE_CHECKING, Any

#: Facade name -> the module that defines it. Imported on first use, so that a Ray worker
#: unpickling a function of ``stellar_ray.spectra`` does not import torch and every model.
_WHERE = {
    "Artifact": ".artifact",
    "load_artifact": ".artifact",
    "package_model": ".artifact",
    "ConfigError": ".errors",
    "ModelError": ".errors",
    "SpectraError": ".errors",
    "StellarRayError": ".errors",
    "InferConfig": ".inference.config",
    "infer": ".inference.pipeline",
    "build": ".models.registry",
    "card": ".models.registry",
    "names": ".models.registry",
    "init_ray": ".runtime",
    "fisher": ".simulation.fisher",
    "SpectrumGenerator": ".simulation.generator",
    "SimulationConfig": ".simulation.survey",
    "simulate": ".simulation.survey",
    "read_catalog": ".spectra.catalog",
    "catalog_to_fits": ".spectra.catalog_fits",
    "catalog_to_hats": ".spectra.catalog_hats",
    "load_manifest": ".spectra.dataset",
    "validate_dataset": ".spectra.dataset",
    "WavelengthGrid": ".spectra.grid",
    "IngestOptions": ".spectra.ingest",
    "ingest": ".spectra.ingest",
    "read_spectra": ".spectra.raydata",
    "write_spectra": ".spectra.raydata",
    "TrainConfig": ".training.config",
    "train": ".training.run",
    "SweepConfig": ".training.sweep",
    "sweep": ".training.sweep",
}

if TYPE_CHECKING:
    from .artifact import Artifact, load_artifact, package_model
    from .errors import ConfigError, ModelError, SpectraError, StellarRayError
    from .inference.config import InferConfig
    from .inference.pipeline import infer
    from .models.registry import build, card, names
    from .runtime import init_ray
    from .simulation.fisher import fisher
    from .simulation.generator import SpectrumGenerator
    from .simulation.survey import SimulationConfig, simulate
    from .spectra.catalog import read_catalog
    from .spectra.catalog_fits import catalog_to_fits
    from .spectra.catalog_hats import catalog_to_hats
    from .spectra.dataset import load_manifest, validate_dataset
    from .spectra.grid import WavelengthGrid
    from .spectra.ingest import IngestOptions, ingest
    from .spectra.raydata import read_spectra, write_spectra
    from .training.config import TrainConfig
    from .training.run import train
    from .training.sweep import SweepConfig, sweep


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'stellar_ray' has no attribute '{name}'")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "Artifact", "ConfigError", "InferConfig", "IngestOptions", "ModelError", "SimulationConfig",
    "SpectraError", "SpectrumGenerator", "StellarRayError", "SweepConfig", "TrainConfig",
    "WavelengthGrid", "build", "card", "catalog_to_fits", "catalog_to_hats", "fisher", "infer",
    "ingest", "init_ray", "load_artifact", "load_manifest", "names", "package_model",
    "read_catalog", "read_spectra", "simulate", "sweep", "train", "validate_dataset",
    "write_spectra",
]
