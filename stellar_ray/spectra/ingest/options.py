"""Options that change how files are read and conformed during ingestion."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ..grid import Medium


class ReaderOptions(BaseModel):
    """How to interpret input files.

    assume_medium: wavelength medium when a file does not say; id_key: header keyword or
    column giving the spectrum id (default: file name, plus '#row' for multi-row files);
    hdf5_*: dataset paths inside HDF5 grids when the names are not the usual ones.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    assume_medium: Medium = "vacuum"
    id_key: str | None = None
    hdf5_wave: str | None = None
    hdf5_flux: str | None = None
    hdf5_sigma: str | None = None
    hdf5_params: str | None = None
