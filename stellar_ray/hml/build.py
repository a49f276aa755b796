"""``stellar-ray hml build``: a clone set turned into an HML generator artifact.

Lines are identified across the grid by where they were found (paper 001 §3.1 groups equal
pre-optimisation centres): greedily, the pixel where most spectra found a line becomes a
line, and each spectrum's detection nearest to it within ``match_pixels`` joins it, until
every detection belongs to a line. Where a grid spectrum lacks a line, ``absent: vanish``
gives it ln a = −1000 (the paper's trick for linear interpolation: the line vanishes a hair
away from the nodes where it was seen, so a line missed at one corner of a cell is missing
inside the whole cell); ``absent: faint`` gives it half the depth of the detection
threshold, so it fades smoothly (always so for ``rbf``, which would ring around a cliff).
Absent lines keep the median of their other parameters.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from pydantic import BaseModel, ConfigDict, Field

from ..artifact import describe, write_artifact
from ..errors import ConfigError, SpectraError
from ..models.normalisation import Normalisation
from ..models.registry import card
from .clone_job import CloneSet, read_clones
from .generator import HMLGenerator, thin_plate
from .validation import ValidationConfig, validate

#: ln a of an absent line at its missing nodes, for linear interpolation (paper 001 §3.2)
LINEAR_ABSENT_LN_A = -1000.0
MODEL = "hml"


class BuildConfig(BaseModel):
    """How a clone set becomes a generator (YAML-loadable)."""

    model_config = ConfigDict(extra="forbid")

    labels: list[str] | None = Field(default=None, description="the labels to interpolate "
                                     "over (default: those that vary over the grid)")
    interpolation: Literal["auto", "linear", "rbf"] = Field(
        default="auto", description="linear: rectilinear grids (the paper's); rbf: "
        "thin-plate splines through any grid; auto: linear where the grid is rectilinear")
    match_pixels: int = Field(default=1, ge=0, description="a detection joins a line "
                              "found within this many pixels")
    min_nodes: int = Field(default=1, gt=0, description="drop lines seen at fewer grid "
                           "points")
    absent: Literal["vanish", "faint"] = Field(
        default="faint", description="a line at grid points where it was not found: "
        "vanish (ln a = −1000, the paper's; linear only) or faint (half as deep as the "
        "detection threshold, so it fades smoothly; always so for rbf)")
    rbf_smoothing: float = Field(default=0.0, ge=0, description="ridge on the RBF system "
                                 "(0: interpolate the nodes exactly)")
    validation: ValidationConfig | None = Field(default=None, description="spectra of "
                                                "known labels to check the uncertainties on")


def identify_lines(spectrum_row: np.ndarray, pixel: np.ndarray, n_pix: int,
                   tolerance: int) -> np.ndarray:
    """The line (0..N−1) of each detection, given the grid spectrum (row) and pixel where
    it was found: greedy by the pixel most spectra share, at most one detection per
    spectrum and line, each within ``tolerance`` pixels of the line's pixel."""
    order = np.argsort(pixel, kind="stable")
    starts = np.searchsorted(pixel[order], np.arange(n_pix + 1))
    counts = np.bincount(pixel, minlength=n_pix).astype(np.int64)
    line = np.full(pixel.size, -1, dtype=np.int64)
    n_lines = 0
    offsets = sorted(range(-tolerance, tolerance + 1), key=lambda o: (abs(o), o))
    while True:
        p = int(np.argmax(counts))
        if counts[p] == 0:
            return line
        taken: set[int] = set()
        for o in offsets:
            q = p + o
            if not 0 <= q < n_pix:
                continue
            members = order[starts[q]:starts[q + 1]]
            for d in members[line[members] < 0]:
                if spectrum_row[d] not in taken:
                    taken.add(int(spectrum_row[d]))
                    line[d] = n_lines
                    counts[q] -= 1
        n_lines += 1


def _node_labels(spectra: pa.Table, clone_set: CloneSet, names: list[str] | None
                 ) -> tuple[list[str], np.ndarray]:
    """The interpolation labels and their values (G, K) at the grid spectra."""
    known = [n for n in clone_set.labels if n in spectra.column_names]
    values = {n: spectra.column(n).to_numpy(zero_copy_only=False).astype(np.float64)
              for n in known}
    if names is None:
        names = [n for n in known if np.isfinite(values[n]).all()
                 and np.unique(values[n]).size > 1]
        if not names:
            raise ConfigError("no label varies over the grid", where=clone_set.source)
    missing = [n for n in names if n not in values]
    if missing:
        raise ConfigError(f"label '{missing[0]}' is not in the grid; it has {known}",
                          where=clone_set.source, field="labels")
    x = np.stack([values[n] for n in names], 1)
    bad = np.flatnonzero(~np.isfinite(x).all(1))
    if bad.size:
        raise SpectraError("a grid spectrum without all labels", file=clone_set.source,
                           row=int(bad[0]), field=names[int(np.flatnonzero(
                               ~np.isfinite(x[bad[0]]))[0])])
    return names, x


def _rectilinear(x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray] | None:
    """Per-axis values and each row's flat node index if the rows (G, K) are exactly every
    combination of the axes' values once, else None."""
    rounded = np.round(x, 9)
    axes = [np.unique(rounded[:, k]) for k in range(x.shape[1])]
    if np.prod([a.size for a in axes]) != len(x) or any(a.size < 2 for a in axes):
        return None
    index = np.stack([np.searchsorted(a, rounded[:, k]) for k, a in enumerate(axes)], 1)
    flat = np.ravel_multi_index(index.T, [a.size for a in axes])
    if np.unique(flat).size != len(x):
        return None
    return axes, flat


def _node_table(lines: pa.Table, row_of: dict[str, int], n_nodes: int, n_pix: int,
                cfg: BuildConfig, absent: str, prominence: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per identified line its reference wavelength (N,) Å and the line values at every
    node (G, 4, N): centre offset (Å), ln a, σ, γ; nodes without the line hold its median
    offset, σ and γ and the ln a of ``absent``."""
    row = np.array([row_of[i] for i in lines.column("spectrum_id").to_pylist()],
                   dtype=np.int64)
    col = {n: lines.column(n).to_numpy().astype(np.float64)
           for n in ("mu0", "mu", "ln_a", "sigma", "gamma")}
    line = identify_lines(row, lines.column("pixel").to_numpy().astype(np.int64), n_pix,
                          cfg.match_pixels)
    seen = np.bincount(line)
    renumber = np.full(seen.size, -1)
    kept = np.flatnonzero(seen >= cfg.min_nodes)
    renumber[kept] = np.arange(kept.size)
    use = renumber[line] >= 0
    row, line = row[use], renumber[line][use]
    col = {k: v[use] for k, v in col.items()}
    n = kept.size
    order = np.argsort(line, kind="stable")
    groups = np.split(order, np.searchsorted(line[order], np.arange(1, n)))
    median = {k: np.array([np.median(v[g]) for g in groups]) for k, v in col.items()}
    mu_ref = median["mu0"]
    if absent == "vanish":
        faint = np.full(n, LINEAR_ABSENT_LN_A)
    else:  # as deep as half the detection threshold: a line's peak depth is a / (σ√2π)
        faint = np.log(0.5 * prominence * np.sqrt(2 * np.pi) * median["sigma"])
    table = np.zeros((n_nodes, 4, n))
    for j, (name, fill) in enumerate((("mu", median["mu"] - mu_ref), ("ln_a", faint),
                                      ("sigma", median["sigma"]),
                                      ("gamma", median["gamma"]))):
        table[:, j, :] = fill[None, :]
        table[row, j, line] = col[name] - (mu_ref[line] if name == "mu" else 0.0)
    return mu_ref, table


def _rbf_weights(nodes: np.ndarray, values: np.ndarray, smoothing: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Thin-plate-spline weights (G, D) and linear-term coefficients (K + 1, D) through
    ``values`` (G, D) at ``nodes`` (G, K)."""
    g, k = nodes.shape
    r = np.linalg.norm(nodes[:, None, :] - nodes[None, :, :], axis=-1)
    phi = thin_plate(torch.as_tensor(r)).numpy() + smoothing * np.eye(g)
    linear = np.hstack([np.ones((g, 1)), nodes])
    system = np.block([[phi, linear], [linear.T, np.zeros((k + 1, k + 1))]])
    rhs = np.vstack([values, np.zeros((k + 1, values.shape[1]))])
    solution = np.linalg.lstsq(system, rhs, rcond=None)[0]
    return solution[:g], solution[g:]


def build_generator(clones_url: str, to: str, config: BuildConfig | None = None, *,
                    storage_options: dict | None = None, address: str | None = None
                    ) -> dict[str, float]:
    """Build the generator of the clone set at ``clones_url`` and write it as a model
    artifact at ``to``; with ``config.validation``, check (and recalibrate) its
    uncertainties on spectra of known labels through Ray (``address``). Returns its
    figures (lines, nodes, clone RMS, validation errors)."""
    cfg = config or BuildConfig()
    clone_set, spectra, lines = read_clones(clones_url, storage_options)
    names, x = _node_labels(spectra, clone_set, cfg.labels)
    grid_cells = _rectilinear(x)
    interpolation = cfg.interpolation
    if interpolation == "auto":
        interpolation = "linear" if grid_cells is not None else "rbf"
    if interpolation == "linear" and grid_cells is None:
        raise ConfigError(f"the grid over {names} is not rectilinear (every combination of "
                          "its values once); use interpolation: rbf", where=clones_url,
                          field="interpolation")
    ids = spectra.column("spectrum_id").to_pylist()
    if interpolation == "rbf" and np.unique(np.round(x, 9), axis=0).shape[0] < len(x):
        raise ConfigError("two grid spectra share their labels; rbf interpolation needs "
                          "distinct nodes", where=clones_url)
    flat = grid_cells[1] if interpolation == "linear" else np.arange(len(x))
    row_of = {i: int(f) for i, f in zip(ids, flat)}
    n_pix = clone_set.grid.wavelength().size
    absent = cfg.absent if interpolation == "linear" else "faint"
    mu_ref, table = _node_table(lines, row_of, len(x), n_pix, cfg, absent,
                                clone_set.config.prominence)
    continuum = np.zeros((len(x), len(spectra.column("continuum")[0])))
    continuum[flat] = np.array(spectra.column("continuum").to_pylist())
    values = np.hstack([table.reshape(len(x), -1), continuum])

    norm = Normalisation.of_labels(x, names)
    mean, std = np.asarray(norm.mean), np.asarray(norm.std)
    teff = None
    if clone_set.blackbody:
        k = names.index("teff") if "teff" in names else None
        if k is None:
            raise ConfigError("the clones were divided by the blackbody: 'teff' must be "
                              "among the labels", where=clones_url, field="labels")
        teff = (k, float(mean[k]), float(std[k]))
    z = (x - mean) / std
    args = {"n_labels": len(names), "n_lines": int(mu_ref.size),
            "arm_npix": clone_set.grid.arm_npix(),
            "continuum_degree": clone_set.config.continuum_degree,
            "wing_pixels": clone_set.config.wing_pixels, "interpolation": interpolation,
            "teff": teff}
    if interpolation == "linear":
        args["axes"] = [((a - mean[k]) / std[k]).tolist()
                        for k, a in enumerate(grid_cells[0])]
        buffers = {"values": values}
    else:
        args["n_nodes"] = len(x)
        weights, poly = _rbf_weights(z, values, cfg.rbf_smoothing)
        buffers = {"values": weights, "nodes": z, "poly": poly}
    model = HMLGenerator(**args)
    model.wave.copy_(torch.tensor(clone_set.grid.wavelength()))
    model.mu_ref.copy_(torch.as_tensor(mu_ref))
    for name, value in buffers.items():
        getattr(model, name).copy_(torch.as_tensor(value))
    per_spectrum = spectra.column("n_lines").to_numpy()
    figures = {"lines": float(mu_ref.size), "nodes": float(len(x)),
               "lines_per_spectrum": float(np.median(per_spectrum)),
               "clone_rms": float(np.median(spectra.column("rms").to_numpy()))}
    metadata = describe(model=MODEL, model_args=args, normalisation=norm,
                        grid=clone_set.grid,
                        units={n: clone_set.units.get(n) for n in names},
                        flux_unit=clone_set.flux_unit, noise_alpha=0.0, metrics=figures,
                        config={"clone": clone_set.config.model_dump(),
                                "build": cfg.model_dump()},
                        training_data=clone_set.source, resolution=clone_set.resolution)
    reference = card(MODEL).task.reference_inputs(
        norm, clone_set.grid.wavelength(), {n: x[:4, k] for k, n in enumerate(names)})
    write_artifact(to, model=model, metadata=metadata, reference_inputs=reference,
                   storage_options=storage_options)
    if cfg.validation is not None:
        calibration, errors = validate(to, names, cfg.validation,
                                       storage_options=storage_options, address=address)
        figures.update(errors)
        metadata = metadata.model_copy(update={"calibration": calibration,
                                               "metrics": figures})
        write_artifact(to, model=model, metadata=metadata, reference_inputs=reference,
                       storage_options=storage_options)
    return figures
