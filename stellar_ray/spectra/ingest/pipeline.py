"""``stellar-ray ingest``: real spectrum files -> a sharded dataset, distributed with Ray.

Files are split into chunks; one Ray task per chunk reads, checks, converts, optionally
degrades and resamples its spectra, joins their catalog labels, writes complete shards and
then its commit record (:mod:`.records`), so a killed run resumes where it stopped.
Spectra that break a rule are set aside in the rejects table (``_rejects.parquet``) with
file, row, field and reason, and the rest goes on. Two spectra with one id stop the run
with one error naming both files. The driver commits the manifest last, and only if at
least one spectrum was accepted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import ray
from astropy import units as u
from pydantic import BaseModel, ConfigDict, Field, model_validator
from rich.progress import Progress

from ...errors import SpectraError
from ...quantities import default_unit
from ...runtime import init_ray
from ...version import code_version
from ..dataset import commit_manifest, dataset_exists, delete_dataset, put_table, write_shard
from ..grid import ArmGrid, WavelengthGrid
from ..manifest import ColumnSpec, LabelSpec, Manifest, Provenance
from ..resolution import Resolution
from ..storage import read_bytes, resolve
from .conform import Conformer, Row, Target, rows_to_batch
from .fits import read_fits
from .hdf5 import read_hdf5
from .ids import apply_id_pattern, compile_id_pattern
from .label_catalog import LabelCatalog, LabelCatalogOptions, read_label_catalog
from .options import ReaderOptions
from .phoenix import is_wavelength_file
from .raw import RawSpectrum, Reject
from .records import ChunkRecord, IngestRecords, plan_fingerprint
from .tabular import read_csv, read_npz

REJECTS_NAME = "_rejects.parquet"

READERS = {
    ".fits": read_fits, ".fit": read_fits, ".fts": read_fits, ".fits.gz": read_fits,
    ".h5": read_hdf5, ".hdf5": read_hdf5, ".he5": read_hdf5,
    ".npz": read_npz, ".csv": read_csv,
}


class IngestOptions(BaseModel):
    """Everything ``stellar-ray ingest`` can be told (typed, loadable from YAML).

    noiseless: store the flux as model flux with no uncertainties, whatever the reader;
    resolution / fwhm: the resolving power / LSF FWHM (Å) of files that do not state it;
    degrade_to: convolve every spectrum down to this resolving power before resampling;
    catalog: labels joined from a separate catalog by id.
    """

    model_config = ConfigDict(extra="forbid")

    grid: WavelengthGrid | None = None  # None: the first spectrum's own grid
    flux_unit: str | None = None  # None: the first spectrum's flux unit
    labels: list[str] = []  # label names to keep besides those of the first file
    reader: ReaderOptions = ReaderOptions()
    catalog: LabelCatalogOptions | None = None
    noiseless: bool = False
    mask_nonfinite: bool = False
    estimate_sigma: bool = False
    resolution: float | None = Field(default=None, gt=0)
    fwhm: float | None = Field(default=None, gt=0, description="Å")
    degrade_to: float | None = Field(default=None, gt=0)
    rows_per_shard: int = 4096
    files_per_task: int | None = Field(default=None, gt=0)  # None: see files_per_chunk
    survey: str | None = None
    mode: str | None = None
    overwrite: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> IngestOptions:
        if self.noiseless and self.estimate_sigma:
            raise ValueError("noiseless and estimate_sigma exclude each other: a model "
                             "spectrum has no noise to estimate")
        if self.resolution is not None and self.fwhm is not None:
            raise ValueError("give the input resolution as resolution or fwhm, not both")
        return self


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
    assumed_medium: int = 0  # files whose wavelength medium was assumed
    resumed_chunks: int = 0  # chunks a previous, killed run had finished
    catalog_matched: int | None = None  # spectra with a catalog row (None: no catalog)
    catalog_unmatched: int | None = None  # spectra without one
    catalog_unused: int | None = None  # catalog rows without a spectrum
    mixed_resolution: list[tuple[float | None, float | None]] = field(default_factory=list)


#: Automatic chunking: about this many chunks, each of this many files at least and at most.
TARGET_CHUNKS, MIN_FILES_PER_CHUNK, MAX_FILES_PER_CHUNK = 64, 16, 1024


def files_per_chunk(n_files: int, options: IngestOptions) -> int:
    """Files per Ray task (and per commit record): ``files_per_task`` if given, else about
    :data:`TARGET_CHUNKS` chunks, so that shards of single-spectrum files are not tiny and
    the work still spreads over a cluster. Depends on the inputs only, never on the
    cluster's size, so that a rerun on another cluster resumes the same chunks."""
    if options.files_per_task is not None:
        return options.files_per_task
    return int(np.clip(-(-n_files // TARGET_CHUNKS), MIN_FILES_PER_CHUNK, MAX_FILES_PER_CHUNK))


def _reader_for(path: str):
    lower = path.lower()
    for suffix in sorted(READERS, key=len, reverse=True):
        if lower.endswith(suffix):
            return READERS[suffix]
    return None


def expand_sources(sources: Sequence[str], storage_options: dict | None = None) -> list[str]:
    """Files named by ``sources`` (files, directories searched recursively, or globs), as
    URLs in the order given, keeping only known formats (and not the PHOENIX wavelength
    file, which is read with its flux files)."""
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
        out += [protocol + f for f in found
                if _reader_for(f) is not None and not is_wavelength_file(f)]
    if not out:
        raise SpectraError(f"no spectrum files found (known suffixes: {sorted(READERS)})",
                           file=", ".join(sources))
    return out


def read_file(url: str, options: ReaderOptions, storage_options: dict | None = None
              ) -> Iterator[RawSpectrum | Reject]:
    """Every spectrum in one file with its final id (``--id-pattern`` applied, ``#row``
    appended), or one Reject for a file that cannot be read at all."""
    reader = _reader_for(url)
    pattern = compile_id_pattern(options.id_pattern)
    try:
        fs, path = resolve(url, storage_options)
        data = read_bytes(fs, path)
        for item in reader(data, url, options, storage_options):
            if isinstance(item, RawSpectrum):
                try:
                    base = apply_id_pattern(item.spectrum_id, pattern, item.source)
                except SpectraError as err:
                    yield Reject(item.source, item.row, item.spectrum_id, err.field, err.reason)
                    continue
                item = dataclasses.replace(item, spectrum_id=base + item.id_suffix,
                                           id_suffix="")
            yield item
    except SpectraError as err:
        yield Reject(url, err.row, None, err.field, err.reason)
    except OSError as err:
        yield Reject(url, None, None, None, f"cannot read the file ({err})")


def ingest_chunk(chunk: int, files: list[str], url: str, manifest: Manifest, target: Target,
                 options: IngestOptions, catalog: LabelCatalog | None,
                 storage_options: dict | None) -> ChunkRecord:
    """Ray task body: conform the spectra of ``files``, join their catalog labels, write them
    as shards ``part-<chunk>-<k>.parquet`` and then the chunk's commit record. Stops at the
    first id seen twice (the record names both files)."""
    conform = Conformer(target)
    rows: list[Row] = []
    rejects: list[Reject] = []
    shards = []
    seen: dict[str, str] = {}  # id -> source, in the order written
    dropped = 0
    assumed: set[str] = set()
    resolutions: set[tuple[float | None, float | None, str]] = set()
    matched: list[str] = []
    extras = {"survey": options.survey, "mode": options.mode}

    def flush(n: int) -> None:
        batch = rows_to_batch(rows[:n], manifest)
        name = f"part-{chunk:06d}-{len(shards):04d}.parquet"
        shards.append(write_shard(url, name, batch, manifest, storage_options).record)
        del rows[:n]

    for f in files:
        for item in read_file(f, options.reader, storage_options):
            result = conform(item) if isinstance(item, RawSpectrum) else item
            if isinstance(result, Reject):
                rejects.append(result)
                continue
            if result.spectrum_id in seen:  # the driver stops the run: nothing to record
                return ChunkRecord(chunk=chunk, shards=[], ids=[], sources=[], rejects=[],
                                   collision=(result.spectrum_id, seen[result.spectrum_id],
                                              item.source))
            seen[result.spectrum_id] = item.source
            if not item.medium_stated:
                assumed.add(f)
            resolutions.add(conform.input_resolution(item))
            # the id is already cut by --id-pattern: it meets the catalog's ids as it is
            if catalog is not None and (found := catalog.lookup(result.spectrum_id)):
                key, at = found
                result.labels.update(catalog.labels_of(at))
                matched.append(key)
            dropped += sum(1 for k in result.labels if k not in manifest.label_names)
            result.metadata.update({k: v for k, v in extras.items() if v is not None})
            rows.append(result)
            if len(rows) >= manifest.rows_per_shard:
                flush(manifest.rows_per_shard)
    if rows:
        flush(len(rows))
    record = ChunkRecord(
        chunk=chunk, shards=shards, ids=list(seen), sources=list(seen.values()),
        rejects=[dataclasses.asdict(r) for r in rejects], dropped_labels=dropped,
        assumed_medium=sorted(assumed), matched=matched,
        resolutions=sorted(resolutions, key=str))
    IngestRecords(url, storage_options).write(record)
    return record


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


def _collision_error(sid: str, first: str, second: str) -> SpectraError:
    return SpectraError(
        f"spectrum id '{sid}' is given to two spectra: {first} and {second}. Choose the id "
        "with --id-key KEYWORD (a header keyword or column) or --id-pattern REGEX (its first "
        "group is the id, e.g. 's(\\d{4})v'); nothing was committed", file=second,
        field="spectrum_id")


def _prepare_destination(to: str, records: IngestRecords, plan: str, options: IngestOptions,
                         storage_options: dict | None) -> None:
    """Refuse to replace a dataset unless asked; keep an unfinished run of the same plan
    (to resume it), refuse one of another plan unless asked."""
    if dataset_exists(to, storage_options):
        if not options.overwrite:
            raise SpectraError("a dataset already exists here (use --overwrite)", file=to)
        delete_dataset(to, storage_options)
        records.clear()
        return
    previous = records.plan()
    other_plan = previous is not None and previous != plan
    if other_plan and not options.overwrite:
        raise SpectraError("an unfinished ingestion of other files or options is here: rerun "
                           "it as it was to resume it, or pass --overwrite to start again",
                           file=to)
    if other_plan or options.overwrite:
        records.clear()


def ingest(sources: Sequence[str], to: str, options: IngestOptions | None = None,
           storage_options: dict | None = None, progress: bool = True,
           address: str | None = None) -> IngestSummary:
    """Ingest ``sources`` into a new dataset at ``to``, joining the Ray cluster at
    ``address`` (default: the current one, else a local one) once the inputs are checked.
    A run killed midway resumes when rerun with the same inputs and options."""
    options = options or IngestOptions()
    files = expand_sources(sources, storage_options)
    options = options.model_copy(update={"files_per_task": files_per_chunk(len(files), options)})
    plan = plan_fingerprint(files, options.model_dump(mode="json", exclude={"overwrite"}))
    records = IngestRecords(to, storage_options)
    _prepare_destination(to, records, plan, options, storage_options)
    catalog = read_label_catalog(options.catalog, storage_options) if options.catalog else None
    first = _peek(files, options, storage_options)
    if first is None:
        rejects = [r for f in files for r in read_file(f, options.reader, storage_options)]
        raise SpectraError(f"no readable spectrum in {len(files)} file(s); first problem: "
                           f"{rejects[0].file}: {rejects[0].reason}" if rejects else "",
                           file=sources[0])
    manifest, target = _plan(first, options, catalog)
    records.start(plan)
    done = records.finished()
    init_ray(address)
    chunks = [files[i:i + options.files_per_task]
              for i in range(0, len(files), options.files_per_task)]
    task = ray.remote(ingest_chunk)
    manifest_ref, catalog_ref = ray.put(manifest), ray.put(catalog)
    pending = [task.remote(i, c, to, manifest_ref, target, options, catalog_ref,
                           storage_options) for i, c in enumerate(chunks) if i not in done]
    finished = dict(done)
    seen: dict[str, str] = {}
    for record in done.values():
        _check_collisions(record, seen, records, pending)
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task(f"ingesting {len(files)} files", total=len(chunks),
                           completed=len(done))
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            record = ray.get(ready[0])
            _check_collisions(record, seen, records, pending)
            finished[record.chunk] = record
            bar.advance(job)
    return _commit(to, files, manifest, options, catalog, finished, len(done), records,
                   storage_options)


def _check_collisions(record: ChunkRecord, seen: dict[str, str], records: IngestRecords,
                      pending: list) -> None:
    """Stop everything (and forget the run) at the first id given to two spectra."""
    collision = record.collision
    if collision is None:
        for sid, src in zip(record.ids, record.sources):
            if sid in seen:
                collision = (sid, seen[sid], src)
                break
            seen[sid] = src
    if collision is not None:
        _stop(pending)
        records.clear()
        raise _collision_error(*collision)


def _stop(pending: list, grace_s: float = 60.0) -> None:
    """Cancel the chunks still running and wait until none of them can write any more.
    A gentle cancel first (the writer's ``finally`` removes its temporary file); a task
    that outlives ``grace_s`` is killed."""
    if not pending:
        return
    for ref in pending:
        ray.cancel(ref)
    _, alive = ray.wait(pending, num_returns=len(pending), timeout=grace_s)
    for ref in alive:
        ray.cancel(ref, force=True)
    if alive:
        ray.wait(alive, num_returns=len(alive))


def _commit(to: str, files: list[str], manifest: Manifest, options: IngestOptions,
            catalog: LabelCatalog | None, finished: dict[int, ChunkRecord], resumed: int,
            records: IngestRecords, storage_options: dict | None) -> IngestSummary:
    ordered = [finished[i] for i in sorted(finished)]
    shards = sorted((s for r in ordered for s in r.shards), key=lambda s: s.path)
    rejects = sorted((x for r in ordered for x in r.reject_objects()),
                     key=lambda x: (x.file, -1 if x.row is None else x.row))
    if not shards:
        records.clear()
        raise SpectraError(f"no spectrum accepted, so no dataset was written: "
                           f"{_reasons(rejects)}", file=to)
    resolutions = sorted({tuple(t) for r in ordered for t in r.resolutions}, key=str)
    committed = manifest.model_copy(update={
        "shards": shards, "resolution": _resolution(manifest.grid, options, resolutions)})
    if rejects:
        put_table(to, REJECTS_NAME, rejects_table(rejects), storage_options)
    commit_manifest(to, committed, storage_options)
    records.clear_records()
    summary = IngestSummary(
        url=to, files=len(files), spectra=committed.num_rows, shards=len(shards),
        rejects=rejects, dropped_labels=sum(r.dropped_labels for r in ordered),
        manifest=committed, assumed_medium=len({f for r in ordered for f in r.assumed_medium}),
        resumed_chunks=resumed,
        mixed_resolution=[t[:2] for t in resolutions] if len(resolutions) > 1 else [])
    if catalog is not None:
        matched = {k for r in ordered for k in r.matched}
        summary.catalog_matched = sum(len(r.matched) for r in ordered)
        summary.catalog_unmatched = committed.num_rows - summary.catalog_matched
        summary.catalog_unused = len(set(catalog.index) - matched)
    return summary


def _reasons(rejects: list[Reject], shown: int = 3) -> str:
    """The commonest reasons for setting spectra aside, with counts and a first file."""
    groups: dict[tuple[str | None, str], list[Reject]] = {}
    for x in rejects:
        groups.setdefault((x.field, x.reason), []).append(x)
    top = sorted(groups.items(), key=lambda kv: -len(kv[1]))[:shown]
    text = "; ".join(f"{len(v)} × {k[0] + ': ' if k[0] else ''}{k[1]} (first: {v[0].file})"
                     for k, v in top)
    more = len(groups) - len(top)
    return f"all {len(rejects)} set aside: {text}" + (f"; {more} other reasons" if more else "")


def _resolution(grid: WavelengthGrid, options: IngestOptions,
                seen: list[tuple[float | None, float | None, str]]) -> list[Resolution]:
    """Each arm's resolution: the target of --degrade-to, else the one resolution all the
    spectra share (none recorded when they differ or nobody said)."""
    if options.degrade_to is not None:
        r, fwhm, origin = options.degrade_to, None, "degraded"
    elif len(seen) == 1 and seen[0][2] != "unknown":
        r, fwhm, origin = seen[0]
    else:
        return []
    out = []
    for arm in grid.arms:
        wave = arm.wavelength()
        out.append(Resolution(lo=float(wave[0]), hi=float(wave[-1]), resolving_power=r,
                              lsf_fwhm=fwhm, origin=origin))
    return out


def _first_grid(first: RawSpectrum) -> WavelengthGrid:
    """The first spectrum's own grid: one arm, or its arms as the file names them."""
    wave = np.sort((first.wave * first.wave_unit).to_value(u.AA))
    if len(first.arms) < 2:
        return WavelengthGrid.from_wavelength(wave, first.medium)
    arms, start = [], 0
    for name, n in first.arms:
        arm = WavelengthGrid.from_wavelength(wave[start:start + n], first.medium).arms[0]
        arms.append(ArmGrid(**{**arm.model_dump(), "name": name.lower()}))
        start += n
    return WavelengthGrid(arms=arms, medium=first.medium)


def _plan(first: RawSpectrum, options: IngestOptions, catalog: LabelCatalog | None
          ) -> tuple[Manifest, Target]:
    """Decide the dataset's grid, flux unit, uncertainties and labels from the options and,
    where they are silent, from the first spectrum (and the catalog's labels)."""
    grid = options.grid or _first_grid(first)
    if options.flux_unit is not None:
        flux_unit = u.Unit(options.flux_unit) if options.flux_unit else u.dimensionless_unscaled
    else:
        flux_unit = first.flux_unit or u.dimensionless_unscaled
    noiseless = options.noiseless or bool(first.noiseless)
    catalog_units = catalog.units if catalog else {}
    labels = list(dict.fromkeys([*first.labels, *options.labels, *catalog_units]))
    extra = [ColumnSpec(name="sigma_estimated", dtype="bool")] if options.estimate_sigma else []
    manifest = Manifest(
        grid=grid,
        flux_unit=flux_unit.to_string(),
        uncertainties="none" if noiseless else "measured",
        model_flux=noiseless,
        labels=[LabelSpec(name=n, unit=catalog_units.get(n) or default_unit(n))
                for n in labels],
        extra_metadata=extra,
        rows_per_shard=options.rows_per_shard,
        provenance=Provenance(producer="stellar-ray ingest",
                              config=options.model_dump(mode="json", exclude={"grid"}),
                              code_version=code_version()),
    )
    target = Target(grid=grid, flux_unit=flux_unit, uncertainties=manifest.uncertainties,
                    mask_nonfinite=options.mask_nonfinite, estimate_sigma=options.estimate_sigma,
                    resolving_power=options.resolution, lsf_fwhm=options.fwhm,
                    degrade_to=options.degrade_to)
    return manifest, target
