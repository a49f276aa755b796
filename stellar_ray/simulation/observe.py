"""``stellar-ray observe``: noiseless spectra of any resolution and grid (a synthetic grid
dataset, or an emulator's output) seen through a spectrograph.

For each spectrum and each arm of the instrument: the flux is projected onto a uniform
ln λ model grid (bin averages where the source is finer than the model step, linear
interpolation where it is coarser), then convolved in Fourier space with the LSF, the
rotation kernel and the pixel boxcar and shifted by the radial velocity — the same
:class:`~.instrument.ArmSampling` path as the built-in generator — and sampled at the pixel
centres (a source in air is moved to vacuum wavelengths first, or the reverse, to match
the pixel grid's medium). The LSF applied is the one that takes the source's resolving
power R_s to the arm's R (1/R_kernel² = 1/R² − 1/R_s²; a source that does not say is taken
as fully resolved).
The noiseless result is kept as ``model_flux``; the noisy flux gets the S/N drawn per
spectrum (per pixel, or per Å converted with the pixel width in the S/N window).

Every draw of a spectrum (RV, v sin i, S/N, noise) comes from a random stream seeded by the
configuration's seed and the spectrum id, so a spectrum is observed the same whatever the
batching, the number of workers or a resumed run.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import lru_cache
from typing import Literal

import numpy as np
import ray
import scipy.sparse as sp
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import SpectraError
from ..quantities import C_KMS
from ..spectra.batch import SpectrumBatch
from ..spectra.dataset import load_manifest, read_shard
from ..spectra.manifest import LabelSpec, Manifest, Provenance, ShardRecord
from ..spectra.resample import Resampler
from ..spectra.resolution import Resolution
from ..spectra.shard_job import run_shard_job, write_committed_shard
from ..spectra.units import air_to_vacuum, vacuum_to_air
from ..version import code_version
from .instrument import (
    ArmConfig,
    ArmSampling,
    InstrumentConfig,
    add_noise,
    arm_samplings,
    assemble,
    instrument_named,
)
from .priors import SNRSpec

#: Spectra per FFT call: bounds memory for fine model grids (n up to ~10⁶ samples per arm).
CHUNK = 16


class Draw(BaseModel):
    """A per-spectrum random quantity: ``fixed`` at ``value``, ``normal`` (mean, sd) or
    ``uniform`` in [low, high]."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["fixed", "normal", "uniform"] = "fixed"
    value: float = 0.0
    mean: float = 0.0
    sd: float = Field(default=0.0, ge=0)
    low: float = 0.0
    high: float = 0.0

    @model_validator(mode="after")
    def _order(self) -> Draw:
        if self.kind == "uniform" and self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self

    def sample(self, rng: np.random.Generator) -> float:
        if self.kind == "normal":
            return float(rng.normal(self.mean, self.sd))
        if self.kind == "uniform":
            return float(rng.uniform(self.low, self.high))
        return self.value


class ObserveConfig(BaseModel):
    """How spectra are observed (YAML-loadable). ``rv`` in km/s (0 for emulator training
    sets); ``vsini``: rotation to apply in km/s, recorded as the label ``vsini`` (None: none,
    for sources that already carry their rotation); ``source_resolving_power``: the source's
    R where its manifest does not record one (None: fully resolved)."""

    model_config = ConfigDict(extra="forbid")

    instrument: str | InstrumentConfig = "LRS"
    rv: Draw = Field(default_factory=Draw)
    vsini: Draw | None = None
    snr: SNRSpec = Field(default_factory=SNRSpec)
    noise: bool = True
    seed: int = 0
    source_resolving_power: float | None = Field(default=None, gt=0)
    oversample: float = Field(default=6.0, ge=3, description="model samples per LSF FWHM "
                              "at the least")
    margin_kms: float = Field(default=1000.0, gt=0, description="model grid beyond each "
                              "arm's pixels: must exceed |rv| plus the kernels' half-widths")

    def instrument_config(self) -> InstrumentConfig:
        return instrument_named(self.instrument)

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def _row_rng(seed: int, spectrum_id: str) -> np.random.Generator:
    key = int.from_bytes(hashlib.sha256(str(spectrum_id).encode()).digest()[:8], "little")
    return np.random.default_rng([seed, key])


def source_resolving_power(manifest: Manifest, arm: ArmConfig, fallback: float | None
                           ) -> float:
    """The source's lowest resolving power over ``arm`` (inf if unknown and no fallback)."""
    found = []
    for r in manifest.resolution:
        if r.hi < arm.lo or r.lo > arm.hi:
            continue
        found.append(r.resolving_power if r.resolving_power is not None
                     else max(r.lo, arm.lo) / r.lsf_fwhm)
    if found:
        return min(found)
    return fallback if fallback is not None else math.inf


def _projection(src_wave: np.ndarray, model_wave: np.ndarray) -> sp.csr_matrix:
    """(n, N) matrix from source flux to the model grid: flux-conserving bin averages where
    the source is finer, linear interpolation where it is coarser; constant beyond its ends."""
    src_step = np.median(np.diff(np.log(src_wave)))
    model_step = math.log(model_wave[1] / model_wave[0])
    if src_step < model_step:
        clipped = np.clip(model_wave, src_wave[0], src_wave[-1])
        inside = (model_wave > src_wave[0]) & (model_wave < src_wave[-1])
        w = Resampler.between(src_wave, model_wave).weights.tolil()
        # model samples at or beyond the source's ends take its edge pixel
        for j in np.flatnonzero(~inside):
            w.rows[j] = [int(np.searchsorted(src_wave, clipped[j]).clip(0, src_wave.size - 1))]
            w.data[j] = [1.0]
        w = w.tocsr()
        sums = np.asarray(w.sum(axis=1)).ravel()
        return sp.diags(1.0 / np.where(sums > 0, sums, 1.0)) @ w
    x = np.clip(model_wave, src_wave[0], src_wave[-1])
    right = np.clip(np.searchsorted(src_wave, x, side="right"), 1, src_wave.size - 1)
    left = right - 1
    frac = (x - src_wave[left]) / (src_wave[right] - src_wave[left])
    rows = np.repeat(np.arange(model_wave.size), 2)
    cols = np.stack([left, right], axis=1).ravel()
    vals = np.stack([1.0 - frac, frac], axis=1).ravel()
    return sp.csr_matrix((vals, (rows, cols)), shape=(model_wave.size, src_wave.size))


class Observer:
    """The instrument applied to spectra on one source grid (built once per worker)."""

    def __init__(self, config: ObserveConfig, source: Manifest, source_url: str = "source"
                 ) -> None:
        self.config = config
        self.instrument = config.instrument_config()
        self.wave = self.instrument.pixel_grid().wavelength()
        src = source.grid.wavelength()
        target_medium = self.instrument.pixel_grid().medium
        if source.grid.medium != target_medium:  # the source's wavelengths in the pixels'
            src = air_to_vacuum(src) if target_medium == "vacuum" else vacuum_to_air(src)
        lo, hi = self.wave[0], self.wave[-1]
        if src[0] > lo * (1 + 1e-6) or src[-1] < hi * (1 - 1e-6):
            raise SpectraError(f"the source covers {src[0]:.2f}–{src[-1]:.2f} Å; the "
                               f"{self.instrument.mode} grid needs {lo:.2f}–{hi:.2f} Å",
                               file=source_url)
        self.kernel_r: dict[str, float] = {}
        for arm in self.instrument.pieces():
            r_src = source_resolving_power(source, arm, config.source_resolving_power)
            if r_src <= arm.resolving_power * (1 + 1e-6):
                raise SpectraError(f"the source's resolving power ({r_src:.0f}) is not above "
                                   f"arm '{arm.name}''s ({arm.resolving_power:.0f}): it "
                                   "cannot be observed at that resolution", file=source_url)
            self.kernel_r[arm.name] = 1.0 / math.sqrt(1.0 / arm.resolving_power**2
                                                      - 1.0 / r_src**2)
        ln_src_step = float(np.median(np.diff(np.log(src))))

        def step(arm: ArmConfig) -> float:
            return min(ln_src_step, 1.0 / (arm.resolving_power * config.oversample))

        self.arms = arm_samplings(self.instrument, self.wave, step, config.margin_kms,
                                  lambda arm: self.kernel_r[arm.name])
        self.projections = [_projection(src, arm.model_wavelength()).astype(np.float64)
                            for arm in self.arms]

    def noiseless(self, flux: np.ndarray, vsini: np.ndarray, rv: np.ndarray) -> np.ndarray:
        """(B, L) observed noiseless flux for source flux (B, N), vsini and rv (B,) km/s."""
        out = []
        for i in range(0, len(flux), CHUNK):
            f = np.asarray(flux[i:i + CHUNK], dtype=np.float64)
            v = torch.as_tensor(vsini[i:i + CHUNK], dtype=torch.float64)
            shift = torch.as_tensor(C_KMS * np.log1p(rv[i:i + CHUNK] / C_KMS))
            pieces: list[tuple[ArmSampling, torch.Tensor]] = []
            for arm, proj in zip(self.arms, self.projections):
                model = torch.from_numpy(np.ascontiguousarray((proj @ f.T).T))
                pieces.append((arm, arm.observe(model, v, shift)))
            out.append(assemble(pieces, self.wave.size).numpy())
        return np.concatenate(out).astype(np.float32)

    def __call__(self, batch: SpectrumBatch) -> SpectrumBatch:
        """The batch observed: same ids, labels (with ``vsini`` where drawn) and metadata,
        on the instrument's grid, with ``rv`` and ``snr`` recorded."""
        cfg = self.config
        n = len(batch)
        rngs = [_row_rng(cfg.seed, sid) for sid in batch.spectrum_id]
        rv = np.array([cfg.rv.sample(r) for r in rngs])
        vsini = np.array([cfg.vsini.sample(r) if cfg.vsini else 0.0 for r in rngs])
        if (vsini < 0).any():
            raise SpectraError(f"vsini drew {vsini.min():.3g} km/s: rotation must be >= 0",
                               field="vsini")
        if np.abs(rv).max(initial=0.0) > cfg.margin_kms / 2:
            raise SpectraError(f"rv drew {np.abs(rv).max():.0f} km/s, more than half the model "
                               f"margin ({cfg.margin_kms:.0f} km/s): raise margin_kms",
                               field="rv")
        source = batch.model_flux if batch.model_flux is not None else batch.flux
        clean = self.noiseless(source, vsini, rv)
        snr = cfg.snr.per_pixel(np.array([cfg.snr.sample(1, r)[0] for r in rngs]), self.wave)
        labels = dict(batch.labels or {})
        if cfg.vsini is not None:
            labels["vsini"] = vsini
        meta = {**batch.metadata, "rv": rv.astype(np.float32),
                "mode": np.full(n, self.instrument.mode, dtype=object)}
        if not cfg.noise:
            meta["snr"] = np.full(n, np.nan, np.float32)
            return SpectrumBatch(spectrum_id=batch.spectrum_id, flux=clean,
                                 sigma=np.zeros_like(clean), mask=np.zeros(clean.shape, np.uint8),
                                 labels=labels, metadata=meta)
        flux, sigma, mask = np.empty_like(clean), np.empty_like(clean), \
            np.empty(clean.shape, np.uint8)
        for i, r in enumerate(rngs):
            gen = torch.Generator().manual_seed(int(r.integers(2**63 - 1)))
            f, s, m = add_noise(torch.from_numpy(clean[i:i + 1]),
                                torch.tensor([snr[i]], dtype=torch.float32),
                                self.wave, self.instrument, gen)
            flux[i], sigma[i], mask[i] = f[0].numpy(), s[0].numpy(), m[0].numpy()
        meta["snr"] = snr.astype(np.float32)
        return SpectrumBatch(spectrum_id=batch.spectrum_id, flux=flux, sigma=sigma, mask=mask,
                             labels=labels, metadata=meta, model_flux=clean)


def observed_manifest(config: ObserveConfig, source: Manifest, source_url: str) -> Manifest:
    """The manifest of ``source`` observed with ``config`` (no shards yet)."""
    inst = config.instrument_config()
    labels = [lab for lab in source.labels if not (config.vsini and lab.name == "vsini")]
    if config.vsini is not None:
        labels.append(LabelSpec(name="vsini", unit="km/s",
                                description="projected rotation applied by observe"))
    return source.model_copy(update={
        "grid": inst.pixel_grid(), "labels": labels,
        "uncertainties": "measured" if config.noise else "none",
        "model_flux": config.noise,
        "resolution": [Resolution(lo=arm.lo, hi=arm.hi, resolving_power=arm.resolving_power,
                                  origin="simulated") for arm in inst.pieces()],
        "shards": [],
        "provenance": Provenance(producer="stellar-ray observe",
                                 config={"source": source_url,
                                         "observe": config.model_dump(mode="json")},
                                 code_version=code_version())})


def check_source(source: Manifest, url: str, config: ObserveConfig) -> None:
    """Refuse what cannot be observed: noisy spectra without model flux, a source that
    already has the ``vsini`` label when rotation is to be drawn."""
    if source.uncertainties != "none" and not source.model_flux:
        raise SpectraError("observe takes noiseless spectra: this dataset has measured "
                           "uncertainties and no model flux (ingest grids with --noiseless)",
                           file=url)
    if config.vsini is not None and "vsini" in source.label_names:
        raise SpectraError("the source already has a 'vsini' label: leave vsini out of the "
                           "observation, or drop that label", file=url, field="vsini")


@lru_cache(maxsize=2)
def _observer(config_json: str, manifest_json: str, url: str) -> Observer:
    return Observer(ObserveConfig.model_validate_json(config_json),
                    Manifest.model_validate_json(manifest_json), url)


class ObserveRows:
    """A Ray Data batch transform (numpy batches of dataset rows) that observes them; the
    observer is built once per worker process."""

    def __init__(self, config: ObserveConfig, source: Manifest, source_url: str) -> None:
        self.config_json = config.model_dump_json()
        self.source_json = source.model_dump_json()
        self.label_names = frozenset(source.label_names)
        self.url = source_url

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        observer = _observer(self.config_json, self.source_json, self.url)
        return observer(SpectrumBatch.from_numpy_rows(rows, self.label_names)).numpy_rows()


def observed_dataset(config: ObserveConfig, url: str, columns: list[str] | None = None,
                     storage_options: dict | None = None,
                     ray_remote_args: dict | None = None) -> ray.data.Dataset:
    """The dataset at ``url`` observed lazily (each pass observes again, with the same draws
    per spectrum); ``columns``: those kept besides ``spectrum_id`` (default all)."""
    from ..spectra.raydata import read_spectra

    source = load_manifest(url, storage_options)
    check_source(source, url, config)
    _observer(config.model_dump_json(), source.model_dump_json(), url)  # a mismatch, here
    ds = read_spectra(url, storage_options=storage_options, **(ray_remote_args or {}))
    observed = ds.map_batches(ObserveRows(config, source, url), batch_size=64,
                              **(ray_remote_args or {}))
    if columns is None:
        return observed
    return observed.select_columns(["spectrum_id", *columns])


def _observe_shard(name: str, config: ObserveConfig, source_url: str, source: Manifest,
                   output: Manifest, to: str, digest: str,
                   storage_options: dict | None) -> ShardRecord:
    """Ray task body: source shard ``name`` observed and written under the same name."""
    record = next(r for r in source.shards if r.path == name)
    batch = SpectrumBatch.from_arrow(
        read_shard(source_url, record, source, storage_options=storage_options), source)
    seen = _observer(config.model_dump_json(), source.model_dump_json(), source_url)(batch)
    return write_committed_shard(to, name, seen, output, digest, storage_options)


def observe(config: ObserveConfig, source_url: str, to: str, *, overwrite: bool = False,
            storage_options: dict | None = None, address: str | None = None,
            progress: bool = True) -> Manifest:
    """Observe every spectrum of the dataset at ``source_url`` into a dataset at ``to``,
    shard for shard (resumable: a rerun continues where a killed one stopped)."""
    if source_url.rstrip("/") == to.rstrip("/"):
        raise SpectraError("--to must differ from the source dataset", file=to)
    source = load_manifest(source_url, storage_options)
    check_source(source, source_url, config)
    # a mismatch of grids or resolutions, here (the observer is kept for this process)
    _observer(config.model_dump_json(), source.model_dump_json(), source_url)
    output = observed_manifest(config, source, source_url)
    digest = hashlib.sha256(json.dumps(
        [config.digest(), [s.sha256 for s in source.shards]]).encode()).hexdigest()[:16]
    return run_shard_job(to, output, [s.path for s in source.shards], digest, _observe_shard,
                         (config, source_url, source, output, to, digest, storage_options),
                         overwrite=overwrite, storage_options=storage_options,
                         address=address, progress=progress,
                         what=f"observing {source.num_rows} spectra")
