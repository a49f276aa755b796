"""Radial-velocity templates from what a user has: an emulator artifact (spectra emulated at
labels spread over its training domain) or a dataset of rest-frame spectra (grid spectra,
an emulated set)."""

from __future__ import annotations

import numpy as np
from scipy.stats import qmc

from ..artifact import Artifact, load_artifact
from ..errors import SpectraError
from ..spectra.dataset import dataset_exists, load_manifest, read_shard
from ..spectra.schema import ID_COLUMN, MODEL_FLUX, tensor_to_numpy
from ..spectra.velocity import Templates, VelocitySettings

#: Template labels stay this share of the domain's width inside each of its edges.
DOMAIN_MARGIN = 0.1


def emulator_templates(artifact: Artifact, n: int, settings: VelocitySettings) -> Templates:
    """``n`` spectra of an emulator at labels of a scrambled Sobol sequence (seed 0) over the
    inner 80 % of its training domain (physical units), on its training grid."""
    norm = artifact.normalisation
    low, high = np.asarray(norm.low, np.float64), np.asarray(norm.high, np.float64)
    span = high - low
    unit = qmc.Sobol(d=len(norm.labels), scramble=True, seed=0).random(n)
    labels = low + span * (DOMAIN_MARGIN + (1 - 2 * DOMAIN_MARGIN) * unit)
    flux = artifact.emulate(labels)
    names = [" ".join(f"{k}={v:.4g}" for k, v in zip(norm.labels, row)) for row in labels]
    grid = artifact.grid
    return Templates.of_spectra(grid.wavelength(), flux, names, grid.arm_npix(),
                                settings.continuum)


def dataset_templates(url: str, n: int, settings: VelocitySettings,
                      storage_options: dict | None = None) -> Templates:
    """The first ``n`` spectra of a dataset (its model flux when it has one). Refuses a
    dataset whose spectra carry radial velocities: templates must be at rest."""
    manifest = load_manifest(url, storage_options)
    if (rv := manifest.largest_abs("rv")) > 0:
        raise SpectraError(f"templates must be rest-frame spectra, and these carry radial "
                           f"velocities up to {rv:.3g} km/s", file=url, field="rv")
    column = MODEL_FLUX if manifest.model_flux else "flux"
    ids, fluxes = [], []
    for record in manifest.shards:
        table = read_shard(url, record, manifest, columns=[ID_COLUMN, column],
                           storage_options=storage_options)
        ids += table.column(ID_COLUMN).to_pylist()
        fluxes.append(tensor_to_numpy(table.column(column)))
        if len(ids) >= n:
            break
    if not ids:
        raise SpectraError("the template dataset holds no spectra", file=url)
    flux = np.concatenate(fluxes)[:n]
    return Templates.of_spectra(manifest.grid.wavelength(), flux, ids[:n],
                                manifest.grid.arm_npix(), settings.continuum)


def load_templates(url: str, n: int, settings: VelocitySettings,
                   storage_options: dict | None = None) -> Templates:
    """Templates from ``url``: a dataset if it holds one, else an emulator artifact."""
    if dataset_exists(url, storage_options):
        return dataset_templates(url, n, settings, storage_options)
    return emulator_templates(load_artifact(url, storage_options), n, settings)
