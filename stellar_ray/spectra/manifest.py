"""The dataset manifest: what a prefix of Parquet shards holds and how to check it.

A dataset at URL ``u`` is ``u/_manifest.json`` plus the shard files it names. The
manifest is written last, so a reader never sees a shard that is not complete, and it
carries everything a downstream stage needs: the wavelength grid, units, label names,
per-shard row counts, checksums and column statistics, and provenance.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import SpectraError
from .grid import WavelengthGrid
from .resolution import Resolution
from .schema import (
    ARROW_TYPES,
    ID_COLUMN,
    MODEL_FLUX,
    SCHEMA_VERSION,
    STANDARD_METADATA,
    TENSOR_COLUMNS,
    TENSOR_DTYPES,
    tensor_type,
)

MANIFEST_NAME = "_manifest.json"


class LabelSpec(BaseModel):
    """One label column: a nullable float64 per spectrum."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    unit: str | None = Field(default=None, description="e.g. 'K', 'dex', 'km/s'")
    description: str | None = None


class ColumnSpec(BaseModel):
    """One extra per-spectrum metadata column beyond the standard ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dtype: Literal["float64", "float32", "int64", "int32", "string", "bool"]
    unit: str | None = None


class Provenance(BaseModel):
    """What produced a dataset: the command, its configuration and the code version."""

    model_config = ConfigDict(extra="forbid")

    producer: str
    config: dict[str, Any] = Field(default_factory=dict)
    code_version: str
    created: str = Field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )


class ShardRecord(BaseModel):
    """A complete shard: its file name relative to the dataset URL, rows, bytes, SHA-256,
    and min/max of its numeric scalar columns (for shard pruning)."""

    model_config = ConfigDict(extra="forbid")

    path: str
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str
    stats: dict[str, tuple[float, float]] = Field(default_factory=dict)


class Manifest(BaseModel):
    """Everything about a dataset except its rows."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    kind: Literal["spectra"] = "spectra"
    grid: WavelengthGrid
    flux_unit: str = Field(description="astropy unit string, '' for normalised flux")
    uncertainties: Literal["measured", "none"] = Field(
        default="measured",
        description="'none' for noiseless model grids: sigma is stored as 0 everywhere",
    )
    model_flux: bool = Field(
        default=False, description="rows also hold the noiseless flux (simulated data)")
    labels: list[LabelSpec] = Field(default_factory=list)
    resolution: list[Resolution] = Field(
        default_factory=list, description="resolving power or LSF FWHM per wavelength range")
    extra_metadata: list[ColumnSpec] = Field(default_factory=list)
    rows_per_shard: int = Field(default=4096, gt=0)
    shards: list[ShardRecord] = Field(default_factory=list)
    provenance: Provenance

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v > SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {v} is newer than this stellar-ray understands "
                f"({SCHEMA_VERSION}); upgrade stellar-ray"
            )
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> Manifest:
        seen: set[str] = {ID_COLUMN, *TENSOR_COLUMNS, MODEL_FLUX, *STANDARD_METADATA}
        for name in [lab.name for lab in self.labels] + [c.name for c in self.extra_metadata]:
            if name in seen:
                raise ValueError(f"column name '{name}' is used twice or is reserved")
            seen.add(name)
        paths = [s.path for s in self.shards]
        if len(set(paths)) != len(paths):
            raise ValueError("a shard is listed twice in the manifest")
        return self

    @property
    def npix(self) -> int:
        return self.grid.npix

    @property
    def label_names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    @property
    def num_rows(self) -> int:
        return sum(s.rows for s in self.shards)

    def largest_abs(self, column: str) -> float:
        """The largest |value| of a numeric column over all shards, from their recorded
        ranges (0.0 when no shard records it)."""
        ends = [abs(v) for shard in self.shards for v in shard.stats.get(column, ())]
        finite = [v for v in ends if np.isfinite(v)]
        return max(finite, default=0.0)

    def metadata_fields(self) -> list[pa.Field]:
        std = [pa.field(n, t) for n, (t, _, _) in STANDARD_METADATA.items()]
        return std + [pa.field(c.name, ARROW_TYPES[c.dtype]) for c in self.extra_metadata]

    def arrow_schema(self) -> pa.Schema:
        """The exact Arrow schema of every shard."""
        fields = [pa.field(ID_COLUMN, pa.string(), nullable=False)]
        tensors = [*TENSOR_COLUMNS, MODEL_FLUX] if self.model_flux else TENSOR_COLUMNS
        fields += [
            pa.field(c, tensor_type(TENSOR_DTYPES[c], self.npix), nullable=False)
            for c in tensors
        ]
        fields += [pa.field(n, pa.float64()) for n in self.label_names]
        fields += self.metadata_fields()
        return pa.schema(fields, metadata={b"stellar_ray.schema_version": str(SCHEMA_VERSION)})

    def to_json(self) -> str:
        return self.model_dump_json(indent=1, exclude_none=True)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpectraError(f"not valid JSON ({err})", file=source) from err
        try:
            return cls.model_validate(data)
        except ValueError as err:
            raise SpectraError(f"invalid manifest: {err}", file=source) from err
