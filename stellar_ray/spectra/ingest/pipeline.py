"""``stellar-ray ingest``: real spectrum files -> a sharded dataset, distributed with Ray.

Files are split into chunks; one Ray task per chunk reads, checks, converts and resamples
its spectra and writes complete shards. Spectra that break a rule are set aside in the
rejects table (``_rejects.parquet``) with the reason, and the rest goes on. The driver
then drops repeated spectrum ids, writes the rejects table and commits the manifest.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import ray
from astropy import units as u
from pydantic import BaseModel, ConfigDict
from rich.progress import Progress

from ...errors import SpectraError
from ...runtime import init_ray
from ...version import code_version
from ..batch import SpectrumBatch
from ..dataset import (
    WrittenShard,
    commit_manifest,
    dataset_exists,
    delete_dataset,
    put_table,
    read_shard,
    write_shard,
)
from ..grid import WavelengthGrid
from ..manifest import ColumnSpec, LabelSpec, Manifest, Provenance
from ..storage import read_bytes, resolve
from .conform import Conformer, Row, Target
from .fits import read_fits
from .hdf5 import read_hdf5
from .options import ReaderOptions
from .raw import LABEL_UNITS, RawSpectrum, Reject
from .tabular import read_csv, read_npz

REJECTS_NAME = "_rejects.parquet"

READERS = {
    ".fits": read_fits, ".fit": read_fits, ".fts": read_fits, ".fits.gz": read_fits,
    ".h5": read_hdf5, ".hdf5": read_hdf5, ".he5": read_hdf5,
    ".npz": read_npz, ".csv": read_csv,
}


class IngestOptions(BaseModel):
    """Everything ``stellar-ray ingest`` can be told (typed, loadable from YAML)."""

    model_config = ConfigDict(extra="forbid")

    grid: WavelengthGrid | None = None  # None: the first spectrum's own grid
    flux_unit: str | None = None  # None: the first spectrum's flux unit
    labels: list[str] = []  # label names to keep besides those of the first file
    reader: ReaderOptions = ReaderOptions()
    mask_nonfinite: bool = False
    estimate_sigma: bool = False
    rows_per_shard: int = 4096
    files_per_task: int = 16
    survey: str | None = None
    mode: str | None = None
    overwrite: bool = False


@dataclass
class IngestSummary:
    """What an ingestion did."""

    url: str
    files: int
    spectra: int
    shards: int
    rejects: list[Reject] = field(default_factory=list)
    dropped_labels: int = 0  # label values not kept: their label is not in the manifest
    manifest: Manifest | None = None


def _reader_for(path: str):
    lower = path.lower()
    for suffix in sorted(READERS, key=len, reverse=True):
        if lower.endswith(suffix):
            return READERS[suffix]
    return None


def expand_sources(sources: Sequence[str], storage_options: dict | None = None) -> list[str]:
    """Files named by ``sources`` (files, directories searched recursively, or globs), as
    URLs in the order given, keeping only known formats."""
    out: list[str] = []
    for src in sources:
        fs, path = resolve(src, storage_options)
        protocol = src.split("://", 1)[0] + "://" if "://" in src else ""
        if protocol == "file://":
            protocol = ""
        if any(ch in path for ch in "*?["):
            found = sorted(fs.glob(path))
        elif fs.isdir(path):
            found = sorted(fs.find(path))
        elif fs.exists(path):
            found = [path]
        else:
            raise SpectraError("no such file or directory", file=src)
        out += [protocol + f for f in found if _reader_for(f) is not None]
    if not out:
        raise SpectraError(f"no spectrum files found (known suffixes: {sorted(READERS)})",
                           file=", ".join(sources))
    return out


def read_file(url: str, options: ReaderOptions, storage_options: dict | None = None
              ) -> Iterator[RawSpectrum | Reject]:
    """Every spectrum in one file, or one Reject for a file that cannot be read at all."""
    reader = _reader_for(url)
    try:
        fs, path = resolve(url, storage_options)
        data = read_bytes(fs, path)
        yield from reader(data, url, options)
    except SpectraError as err:
        yield Reject(url, err.row, None, err.field, err.reason)
    except OSError as err:
        yield Reject(url, None, None, None, f"cannot read the file ({err})")


def _rows_to_batch(rows: list[Row], manifest: Manifest) -> SpectrumBatch:
    known = set(manifest.label_names)
    meta_names = {f.name for f in manifest.metadata_fields()}
    return SpectrumBatch(
        spectrum_id=[r.spectrum_id for r in rows],
        flux=np.stack([r.flux for r in rows]),
        sigma=np.stack([r.sigma for r in rows]),
        mask=np.stack([r.mask for r in rows]),
        labels={n: np.array([r.labels.get(n, np.nan) for r in rows]) for n in known} or None,
        metadata={n: np.array([r.metadata.get(n) for r in rows], dtype=object)
                  for n in meta_names if any(n in r.metadata for r in rows)},
    )


def ingest_chunk(chunk: int, files: list[str], url: str, manifest: Manifest, target: Target,
                 options: IngestOptions, storage_options: dict | None
                 ) -> tuple[list[WrittenShard], list[Reject], int]:
    """Ray task body: conform the spectra of ``files`` and write them as shards
    ``part-<chunk>-<k>.parquet``. Returns the shards, the rejects, and how many label values
    were dropped because the manifest does not list their label."""
    conform = Conformer(target)
    rows: list[Row] = []
    rejects: list[Reject] = []
    written: list[WrittenShard] = []
    seen: dict[str, str] = {}
    dropped = 0
    extras = {"survey": options.survey, "mode": options.mode}

    def flush(n: int) -> None:
        batch = _rows_to_batch(rows[:n], manifest)
        name = f"part-{chunk:06d}-{len(written):04d}.parquet"
        written.append(write_shard(url, name, batch, manifest, storage_options))
        del rows[:n]

    for f in files:
        for item in read_file(f, options.reader, storage_options):
            result = conform(item) if isinstance(item, RawSpectrum) else item
            if isinstance(result, Reject):
                rejects.append(result)
                continue
            if result.spectrum_id in seen:
                reason = f"duplicate spectrum_id (first in {seen[result.spectrum_id]})"
                rejects.append(Reject(item.source, item.row, result.spectrum_id, "spectrum_id",
                                      reason))
                continue
            seen[result.spectrum_id] = item.source
            dropped += sum(1 for k in result.labels if k not in manifest.label_names)
            result.metadata.update({k: v for k, v in extras.items() if v is not None})
            rows.append(result)
            if len(rows) >= manifest.rows_per_shard:
                flush(manifest.rows_per_shard)
    if rows:
        flush(len(rows))
    return written, rejects, dropped


def _drop_repeated_ids(written: list[WrittenShard], url: str, manifest: Manifest,
                       storage_options: dict | None) -> tuple[list[WrittenShard], list[Reject]]:
    """Keep the first occurrence of each spectrum_id across shards; rewrite shards that held
    a repeat and report the repeats as rejects."""
    first: dict[str, str] = {}
    repeats: dict[str, list[int]] = {}
    for w in written:
        for row, sid in enumerate(w.ids):
            if sid in first:
                repeats.setdefault(w.record.path, []).append(row)
            else:
                first[sid] = w.record.path
    if not repeats:
        return written, []
    rejects, out = [], []
    for w in written:
        rows = repeats.get(w.record.path)
        if not rows:
            out.append(w)
            continue
        batch = SpectrumBatch.from_arrow(
            read_shard(url, w.record, manifest, storage_options=storage_options), manifest)
        sources = batch.metadata.get("source", np.full(len(batch), None, dtype=object))
        for r in rows:
            sid = str(batch.spectrum_id[r])
            rejects.append(Reject(str(sources[r]), None, sid, "spectrum_id",
                                  f"duplicate spectrum_id (first in shard {first[sid]})"))
        keep = np.ones(len(batch), bool)
        keep[rows] = False
        if keep.any():
            out.append(write_shard(url, w.record.path, batch.take(keep), manifest,
                                   storage_options))
        else:
            fs, base = resolve(url, storage_options)
            fs.rm_file(f"{base}/{w.record.path}")
    return out, rejects


def _peek(files: list[str], options: IngestOptions, storage_options: dict | None
          ) -> RawSpectrum | None:
    for f in files:
        for item in read_file(f, options.reader, storage_options):
            if isinstance(item, RawSpectrum):
                return item
    return None


def rejects_table(rejects: Sequence[Reject]) -> pa.Table:
    return pa.table({
        "file": pa.array([r.file for r in rejects], pa.string()),
        "row": pa.array([r.row for r in rejects], pa.int64()),
        "spectrum_id": pa.array([r.spectrum_id for r in rejects], pa.string()),
        "field": pa.array([r.field for r in rejects], pa.string()),
        "reason": pa.array([r.reason for r in rejects], pa.string()),
    })


def ingest(sources: Sequence[str], to: str, options: IngestOptions | None = None,
           storage_options: dict | None = None, progress: bool = True,
           address: str | None = None) -> IngestSummary:
    """Ingest ``sources`` into a new dataset at ``to``, joining the Ray cluster at
    ``address`` (default: the current one, else a local one) once the inputs are checked."""
    options = options or IngestOptions()
    if dataset_exists(to, storage_options):
        if not options.overwrite:
            raise SpectraError("a dataset already exists here (use --overwrite)", file=to)
        delete_dataset(to, storage_options)
    files = expand_sources(sources, storage_options)
    first = _peek(files, options, storage_options)
    if first is None:
        rejects = [r for f in files for r in read_file(f, options.reader, storage_options)]
        raise SpectraError(f"no readable spectrum in {len(files)} file(s); first problem: "
                           f"{rejects[0].file}: {rejects[0].reason}" if rejects else "",
                           file=sources[0])
    manifest, target = _plan(first, options)
    init_ray(address)
    chunks = [files[i:i + options.files_per_task]
              for i in range(0, len(files), options.files_per_task)]
    task = ray.remote(ingest_chunk)
    manifest_ref = ray.put(manifest)
    refs = [task.remote(i, c, to, manifest_ref, target, options, storage_options)
            for i, c in enumerate(chunks)]
    written, rejects, dropped = [], [], 0
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task(f"ingesting {len(files)} files", total=len(refs))
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            w, r, d = ray.get(done[0])
            written += w
            rejects += r
            dropped += d
            bar.advance(job)
    written.sort(key=lambda w: w.record.path)
    written, repeated = _drop_repeated_ids(written, to, manifest, storage_options)
    rejects += repeated
    if rejects:
        put_table(to, REJECTS_NAME, rejects_table(rejects), storage_options)
    committed = manifest.model_copy(update={"shards": [w.record for w in written]})
    commit_manifest(to, committed, storage_options)
    return IngestSummary(url=to, files=len(files), spectra=committed.num_rows,
                         shards=len(written), rejects=rejects, dropped_labels=dropped,
                         manifest=committed)


def _plan(first: RawSpectrum, options: IngestOptions) -> tuple[Manifest, Target]:
    """Decide the dataset's grid, flux unit, uncertainties and labels from the options and,
    where they are silent, from the first spectrum."""
    grid = options.grid
    if grid is None:
        wave = (first.wave * first.wave_unit).to_value(u.AA)
        grid = WavelengthGrid.from_wavelength(np.sort(wave), first.medium)
    if options.flux_unit is not None:
        flux_unit = u.Unit(options.flux_unit) if options.flux_unit else u.dimensionless_unscaled
    else:
        flux_unit = first.flux_unit or u.dimensionless_unscaled
    noiseless = first.sigma is None and not options.estimate_sigma and \
        _reader_for(first.source.split("#")[0]) is read_hdf5
    labels = list(dict.fromkeys([*first.labels, *options.labels]))
    extra = [ColumnSpec(name="sigma_estimated", dtype="bool")] if options.estimate_sigma else []
    manifest = Manifest(
        grid=grid,
        flux_unit=flux_unit.to_string(),
        uncertainties="none" if noiseless else "measured",
        labels=[LabelSpec(name=n, unit=LABEL_UNITS.get(n)) for n in labels],
        extra_metadata=extra,
        rows_per_shard=options.rows_per_shard,
        provenance=Provenance(producer="stellar-ray ingest",
                              config=options.model_dump(mode="json", exclude={"grid"}),
                              code_version=code_version()),
    )
    target = Target(grid=grid, flux_unit=flux_unit, uncertainties=manifest.uncertainties,
                    mask_nonfinite=options.mask_nonfinite, estimate_sigma=options.estimate_sigma)
    return manifest, target
