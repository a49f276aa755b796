"""``stellar-ray simulate``: a simulated survey written as a sharded dataset by Ray tasks.

Shard k holds rows [k·R, (k+1)·R); its labels, S/N values and noise come from random
streams seeded by (seed, k), so the same configuration gives the same bytes whatever the
number of workers. Shards are written resumably (:mod:`~stellar_ray.spectra.shard_job`).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import ray
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..spectra.batch import SpectrumBatch
from ..spectra.manifest import ColumnSpec, LabelSpec, Manifest, Provenance, ShardRecord
from ..spectra.resolution import Resolution
from ..spectra.shard_job import run_shard_job, write_committed_shard
from ..version import code_version
from .generator import SpectrumGenerator
from .instrument import InstrumentConfig, add_noise, instrument_named
from .labels import DATASET_LABELS, INDEX, LABELS
from .observing import Observing, ObservingConditions
from .priors import GalacticPrior, GridPrior, Prior, SNRSpec

#: Wavelengths (Å) the line list and the continuous-opacity fits are valid over.
MODEL_RANGE_A = (3000.0, 11000.0)


class SkyRegion(BaseModel):
    """Where a survey's stars lie on the sky: uniform per unit area in right ascension
    ``ra`` and declination ``dec`` ranges (degrees, ICRS)."""

    model_config = ConfigDict(extra="forbid")

    ra: tuple[float, float] = (0.0, 360.0)
    dec: tuple[float, float] = (-90.0, 90.0)

    @model_validator(mode="after")
    def _check(self) -> SkyRegion:
        if not (0 <= self.ra[0] < self.ra[1] <= 360 and -90 <= self.dec[0] < self.dec[1] <= 90):
            raise ValueError("sky: ra within [0, 360] and dec within [-90, 90] degrees, "
                             "each as [low, high] with low < high")
        return self

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) of ``n`` stars, degrees."""
        ra = rng.uniform(*self.ra, n)
        sin_dec = rng.uniform(*np.sin(np.radians(self.dec)), n)
        return ra, np.degrees(np.arcsin(sin_dec))


class SimulationConfig(BaseModel):
    """A simulated survey (YAML-loadable)."""

    model_config = ConfigDict(extra="forbid")

    instrument: str | InstrumentConfig = "LRS"
    n_spectra: int = Field(default=1000, gt=0)
    seed: int = 0
    prior: Prior = Field(default_factory=GalacticPrior)
    snr: SNRSpec = Field(default_factory=SNRSpec)
    observing: ObservingConditions | None = Field(
        default=None, description="reddening, tellurics and flux-calibration distortions")
    noise: bool = True
    rows_per_shard: int = Field(default=1024, gt=0)
    batch_size: int = Field(default=16, gt=0, description="spectra per generator call")
    precision: Literal["float32", "float64"] = "float32"
    survey: str = "simulated"
    id_prefix: str = "sim"
    sky: SkyRegion | None = Field(default=None, description="sky positions (ra, dec) drawn "
                                  "in this region; none: the spectra have no positions")

    @model_validator(mode="after")
    def _check(self) -> SimulationConfig:
        inst = self.instrument_config()
        w = inst.pixel_grid().wavelength()
        if w[0] < MODEL_RANGE_A[0] or w[-1] > MODEL_RANGE_A[1]:
            raise ValueError(f"instrument.grid: {w[0]:.1f}–{w[-1]:.1f} Å is outside the range "
                             f"the line list covers, {MODEL_RANGE_A[0]:.0f}–"
                             f"{MODEL_RANGE_A[1]:.0f} Å")
        return self

    def instrument_config(self) -> InstrumentConfig:
        return instrument_named(self.instrument)

    @property
    def total(self) -> int:
        return self.prior.size if isinstance(self.prior, GridPrior) else self.n_spectra

    @property
    def n_shards(self) -> int:
        return -(-self.total // self.rows_per_shard)

    def digest(self) -> str:
        """Hash of everything that decides the bytes written."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    @classmethod
    def from_yaml(cls, path: str | Path) -> SimulationConfig:
        return load_simulation_job(path)[0]


def load_simulation_job(path: str | Path) -> tuple[SimulationConfig, str | None]:
    """A simulation YAML: the configuration, and the optional ``to:`` (the dataset URL) that
    job files carry so that ``python -m jobs.simulate --config FILE`` needs nothing else."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    to = data.pop("to", None)
    return SimulationConfig.model_validate(data), to


#: Per-spectrum observing conditions stored as metadata: name -> unit.
CONDITION_COLUMNS = {"ebv": "mag", "airmass": None, "pwv": "mm"}


def survey_manifest(config: SimulationConfig) -> Manifest:
    inst = config.instrument_config()
    extra = ([ColumnSpec(name=n, dtype="float32", unit=u) for n, u in CONDITION_COLUMNS.items()]
             if config.observing is not None else [])
    return Manifest(
        extra_metadata=extra,
        grid=inst.pixel_grid(), flux_unit="",
        uncertainties="measured" if config.noise else "none",
        model_flux=config.noise,
        labels=[LabelSpec(name=lab.name, unit=lab.unit, description=lab.description)
                for lab in LABELS if lab.name in DATASET_LABELS],
        resolution=[Resolution(lo=arm.lo, hi=arm.hi, resolving_power=arm.resolving_power,
                               origin="simulated") for arm in inst.pieces()],
        rows_per_shard=config.rows_per_shard,
        provenance=Provenance(producer="stellar-ray simulate",
                              config=config.model_dump(mode="json"),
                              code_version=code_version()),
    )


@lru_cache(maxsize=2)
def _generator(instrument_json: str) -> SpectrumGenerator:
    return SpectrumGenerator(InstrumentConfig.model_validate_json(instrument_json))


@lru_cache(maxsize=2)
def _observing(conditions_json: str, instrument_json: str) -> Observing:
    return Observing(ObservingConditions.model_validate_json(conditions_json),
                     InstrumentConfig.model_validate_json(instrument_json))


def shard_conditions(config: SimulationConfig, shard: int) -> dict[str, np.ndarray] | None:
    """Observing conditions of shard ``shard``'s rows (a stream of their own, so labels and
    S/N do not change when conditions are added), or None."""
    if config.observing is None:
        return None
    n = min(config.rows_per_shard, config.total - shard * config.rows_per_shard)
    rng = np.random.default_rng([config.seed, shard, 2])
    return config.observing.draw(n, rng, len(config.instrument_config().arms))


def shard_labels(config: SimulationConfig, shard: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Labels (n, K), S/N per pixel (n,) and the first row index of shard ``shard``."""
    start = shard * config.rows_per_shard
    n = min(config.rows_per_shard, config.total - start)
    rng = np.random.default_rng([config.seed, shard])
    if isinstance(config.prior, GridPrior):
        labels = config.prior.sample()[start:start + n]
    else:
        labels = config.prior.sample(n, rng)
    wave = config.instrument_config().pixel_grid().wavelength()
    return labels, config.snr.per_pixel(config.snr.sample(n, rng), wave), start


def simulate_batch(generator: SpectrumGenerator, labels: np.ndarray, snr: np.ndarray,
                   config: SimulationConfig, noise_seed: int,
                   conditions: dict[str, np.ndarray] | None = None) -> SpectrumBatch:
    """Spectra for ``labels`` (n, K) at ``snr`` (n,), with noise drawn from ``noise_seed``,
    observed under ``conditions`` (:meth:`ObservingConditions.draw`) when given."""
    dtype = torch.float32 if config.precision == "float32" else torch.float64
    torch_gen = torch.Generator().manual_seed(noise_seed)
    # Similar stars share generator calls (cool-star molecular bands are then computed only
    # where needed); the order of the rows is restored afterwards.
    order = np.argsort(labels[:, INDEX["teff"]], kind="stable")
    fluxes = []
    with torch.no_grad():
        for i in range(0, len(labels), config.batch_size):
            rows = order[i:i + config.batch_size]
            fluxes.append(generator(torch.as_tensor(labels[rows], dtype=dtype)))
    clean = torch.empty((len(labels), generator.npix), dtype=dtype)
    clean[torch.as_tensor(order)] = torch.cat(fluxes)
    metadata = {}
    if conditions is not None and config.observing is not None:
        observing = _observing(config.observing.model_dump_json(),
                               generator.instrument.model_dump_json())
        clean = clean * observing.transmission(conditions, dtype)
        metadata = {n: conditions[n].astype(np.float32) for n in CONDITION_COLUMNS}
    if config.noise:
        flux, sigma, mask = add_noise(clean, torch.as_tensor(snr, dtype=dtype),
                                      generator.wave, generator.instrument, torch_gen)
    else:
        flux, sigma, mask = clean, torch.zeros_like(clean), torch.zeros(clean.shape,
                                                                          dtype=torch.uint8)
    return SpectrumBatch(
        spectrum_id=np.empty(len(labels), dtype=object), flux=flux.numpy(),
        sigma=sigma.numpy(), mask=mask.numpy(),
        labels={n: labels[:, INDEX[n]] for n in DATASET_LABELS},
        metadata={"rv": labels[:, INDEX["rv"]].astype(np.float32),
                  "snr": snr.astype(np.float32) if config.noise
                  else np.full(len(labels), np.nan, np.float32), **metadata},
        model_flux=clean.numpy() if config.noise else None,
    )


def shard_batch(config: SimulationConfig, shard: int) -> SpectrumBatch:
    """Shard ``shard`` of the survey: labels, noise and ids all seeded by (seed, shard)."""
    labels, snr, start = shard_labels(config, shard)
    generator = _generator(config.instrument_config().model_dump_json())
    batch = simulate_batch(generator, labels, snr, config,
                           noise_seed=int(np.random.SeedSequence([config.seed, shard, 1])
                                          .generate_state(1)[0]),
                           conditions=shard_conditions(config, shard))
    batch.spectrum_id = np.array([f"{config.id_prefix}-{config.seed}-{start + i:09d}"
                                  for i in range(len(labels))], dtype=object)
    mode = config.instrument_config().mode
    batch.metadata.update({"survey": np.full(len(labels), config.survey, dtype=object),
                           "mode": np.full(len(labels), mode, dtype=object)})
    if config.sky is not None:
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, shard, 2]))
        batch.metadata["ra"], batch.metadata["dec"] = config.sky.draw(len(labels), rng)
    return batch


def simulated_dataset(config: SimulationConfig, columns: list[str] | None = None,
                      ray_remote_args: dict | None = None) -> ray.data.Dataset:
    """The survey as a lazy Ray dataset, one block per shard, generated when it is read.

    Nothing is stored: each pass over the dataset (each training epoch) runs the generator
    again, with the same labels and noise per row (seeded by shard), so that runs are
    reproducible; the trainer adds its own fresh noise to ``model_flux`` every epoch.
    ``columns``: those kept besides ``spectrum_id`` (default: all); ``ray_remote_args``:
    resources of the generating tasks (e.g. ``{"num_cpus": 0.5}``)."""

    def generate(shards: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = SpectrumBatch.concat([shard_batch(config, int(k)) for k in shards["id"]]
                                    ).numpy_rows()
        keep = rows if columns is None else ["spectrum_id", *columns]
        return {name: rows[name] for name in keep}

    shards = ray.data.range(config.n_shards, override_num_blocks=config.n_shards)
    return shards.map_batches(generate, batch_size=1, **(ray_remote_args or {}))


def simulate_shard(name: str, config: SimulationConfig, url: str, manifest: Manifest,
                   storage_options: dict | None = None) -> ShardRecord:
    """Ray task body: generate and write shard ``name`` (``part-<k>.parquet``)."""
    shard = int(name.removeprefix("part-").removesuffix(".parquet"))
    return write_committed_shard(url, name, shard_batch(config, shard), manifest,
                                 config.digest(), storage_options)


def simulate(config: SimulationConfig, to: str, *, storage_options: dict | None = None,
             overwrite: bool = False, progress: bool = True, address: str | None = None,
             num_cpus_per_task: float = 1.0) -> Manifest:
    """Generate the survey described by ``config`` into a dataset at ``to``."""
    return run_shard_job(to, survey_manifest(config),
                         [f"part-{k:06d}.parquet" for k in range(config.n_shards)],
                         config.digest(), simulate_shard,
                         (config, to, survey_manifest(config), storage_options),
                         overwrite=overwrite, storage_options=storage_options, address=address,
                         num_cpus=num_cpus_per_task, progress=progress,
                         what=f"simulating {config.total} spectra")
