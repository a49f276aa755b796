"""Options that change how files are read and conformed during ingestion."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

from ..grid import Medium
from .ids import compile_id_pattern


class ReaderOptions(BaseModel):
    """How to interpret input files.

    assume_medium: wavelength medium when a file does not say; id_key: header keyword or
    column giving the spectrum id (default: file name without its extension, plus '#row' for
    multi-row files); id_pattern: a regex whose first group, searched in that id, is the id
    (e.g. ``s(\\d{4})v``); hdf5_*: dataset paths inside HDF5 grids when the names are not the
    usual ones; phoenix_wave: URL of the PHOENIX wavelength file (default: beside the flux
    files).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    assume_medium: Medium = "vacuum"
    id_key: str | None = None
    id_pattern: str | None = None
    hdf5_wave: str | None = None
    hdf5_flux: str | None = None
    hdf5_sigma: str | None = None
    hdf5_params: str | None = None
    phoenix_wave: str | None = None

    @field_validator("id_pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        compile_id_pattern(v)
        return v
