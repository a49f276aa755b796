"""An emulator artifact as the explorer uses it: its labels' domain, the spectrum at a
point, the Cramér–Rao bounds of the labels there, the nearest spectrum of its training set,
and the spectrum as a FITS or CSV file."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from astropy.table import Table

from ..artifact import Artifact, LabelInfo
from ..errors import ModelError
from ..simulation.fisher import bounds_from_information, jacobian
from ..spectra.dataset import load_manifest
from ..spectra.schema import MODEL_FLUX
from .lookup import SpectrumLookup


class TrainingNeighbours:
    """The spectra an emulator was trained on, searchable by label: ``nearest`` gives the
    one closest to a point in the emulator's z-scored labels."""

    def __init__(self, url: str, artifact: Artifact, storage_options: dict | None = None
                 ) -> None:
        self.lookup = SpectrumLookup(url, storage_options)
        self.norm = artifact.normalisation
        names = list(self.norm.labels)
        table = self.lookup.label_table(names)
        self.ids = table.column("spectrum_id").to_pylist()
        labels = np.stack([table.column(n).to_numpy().astype(np.float64) for n in names], 1)
        self.z = self.norm.z(labels).numpy()
        self.column = MODEL_FLUX if self.lookup.manifest.model_flux else "flux"

    def nearest(self, values: Sequence[float]) -> tuple[str, np.ndarray, np.ndarray]:
        """(id, labels (K,), flux (L,)) of the training spectrum nearest to ``values``."""
        z = self.norm.z(np.atleast_2d(values)).numpy()[0]
        i = int(np.nanargmin(((self.z - z) ** 2).sum(1)))
        row = self.lookup.spectrum(self.ids[i])
        labels = np.array([float(row[n][0]) for n in self.norm.labels])
        return self.ids[i], labels, np.asarray(row[self.column][0], dtype=np.float64)


class EmulatorView:
    """An emulator artifact (labels → spectrum) for the explorer; ``name`` is how the
    dashboard lists it."""

    def __init__(self, artifact: Artifact, name: str, storage_options: dict | None = None
                 ) -> None:
        if "fit" not in artifact.task.modes:
            raise ModelError(f"a {artifact.task.family} does not emulate spectra",
                             where=artifact.url)
        artifact.model.requires_grad_(False)  # derivatives are taken by the labels only
        self.artifact = artifact
        self.name = name
        self.storage_options = storage_options
        self.wavelength = artifact.grid.wavelength()
        self._neighbours: TrainingNeighbours | None = None

    @property
    def labels(self) -> list[LabelInfo]:
        return self.artifact.metadata.labels

    def centre(self) -> np.ndarray:
        """(K,) the labels at the centre of the training set (z = 0)."""
        k = len(self.labels)
        return self.artifact.normalisation.unz(np.zeros((1, k)))[0]

    def spectrum(self, values: Sequence[float], wavelength: np.ndarray | None = None
                 ) -> np.ndarray:
        """(L,) the emulated flux at labels ``values`` (K,), on the training grid or (for
        wavelength-query emulators) at ``wavelength`` Å."""
        return self.artifact.emulate(np.atleast_2d(np.asarray(values, dtype=np.float64)),
                                     wavelength)[0]

    def bounds(self, values: Sequence[float], snr: float) -> dict[str, float]:
        """The Cramér–Rao bound of each label (its unit) at ``values`` for a spectrum whose
        every pixel has σ = median flux / ``snr``, the other labels free (marginalised);
        ∞ where the spectrum does not constrain a label."""
        art = self.artifact
        norm, task = art.normalisation, art.task
        wave = torch.tensor(self.wavelength, dtype=torch.float32)
        z = norm.z(np.atleast_2d(np.asarray(values, dtype=np.float64)))

        def forward(zz: torch.Tensor) -> torch.Tensor:
            return task.emulate(art.model, norm, zz, wave)

        with torch.no_grad():
            flux = forward(z)
        j = jacobian(forward, z, range(z.shape[1])).double()  # (1, L, K)
        sigma = float(np.median(np.abs(flux.numpy()))) / snr
        info = torch.einsum("blp,blq->bpq", j, j) / sigma**2
        crb_z, _ = bounds_from_information(info)
        crb = norm.unz_err(z.numpy(), crb_z.numpy())[0]
        return {lab.name: float(c) for lab, c in zip(self.labels, crb)}

    def neighbours(self, data: str | None) -> TrainingNeighbours | None:
        """The training set (the artifact's recorded one, else ``data`` when it is on the
        emulator's grid), or None when neither is readable on that grid."""
        if self._neighbours is None:
            for url in (self.artifact.metadata.provenance.training_data, data):
                if url and self._on_grid(url):
                    self._neighbours = TrainingNeighbours(url, self.artifact,
                                                          self.storage_options)
                    break
        return self._neighbours

    def _on_grid(self, url: str) -> bool:
        try:
            grid = load_manifest(url, self.storage_options).grid.wavelength()
        except Exception:  # noqa: BLE001 - an unreadable dataset just offers no neighbours
            return False
        return grid.shape == self.wavelength.shape and bool(
            np.allclose(grid, self.wavelength, rtol=1e-7))

    def export(self, values: Sequence[float], fmt: str) -> bytes:
        """The spectrum at ``values`` as a FITS binary table (``fmt`` 'fits': WAVELENGTH in
        Å, FLUX in the training flux unit, the labels in the header) or as CSV."""
        flux = self.spectrum(values)
        if fmt == "csv":
            lines = ["# " + ", ".join(f"{lab.name}={v:g}" for lab, v in
                                      zip(self.labels, values)),
                     "wavelength_angstrom,flux"]
            lines += [f"{w:.6f},{f:.8g}" for w, f in zip(self.wavelength, flux)]
            return ("\n".join(lines) + "\n").encode()
        if fmt != "fits":
            raise ValueError(f"unknown format '{fmt}': choose fits or csv")
        table = Table({"WAVELENGTH": self.wavelength, "FLUX": flux})
        table["WAVELENGTH"].unit = "Angstrom"
        table["FLUX"].unit = self.artifact.metadata.flux_unit or None
        table.meta["ARTIFACT"] = self.artifact.artifact_id[:68]
        table.meta["MODEL"] = self.artifact.metadata.model
        for lab, v in zip(self.labels, values):
            table.meta[f"HIERARCH LABEL {lab.name.upper()}"] = float(v)
        out = io.BytesIO()
        table.write(out, format="fits")
        return out.getvalue()
