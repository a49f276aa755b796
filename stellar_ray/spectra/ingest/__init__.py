"""Ingestion of real spectrum files (FITS, HDF5 grids, NumPy, CSV) into a dataset."""

from .pipeline import IngestOptions, IngestSummary, ingest

__all__ = ["IngestOptions", "IngestSummary", "ingest"]
