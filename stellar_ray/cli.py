"""The ``stellar-ray`` command line. Thin: each command parses its options and calls one
function of the package."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from .errors import ConfigError, StellarRayError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Machine-learning stellar spectroscopy at survey scale on Ray.")
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


@app.callback()
def main(verbose: Annotated[bool, typer.Option(
        "--verbose", help="show Ray's own logs and the workers' output")] = False) -> None:
    """Machine-learning stellar spectroscopy at survey scale on Ray."""
    from .runtime import set_verbose

    set_verbose(verbose)

Address = Annotated[str | None, typer.Option(
    help="Ray cluster address (default: RAY_ADDRESS, else a local cluster)")]
StorageOptions = Annotated[str | None, typer.Option(
    "--storage-options", help="JSON object passed to fsspec (e.g. an S3 endpoint_url)")]


def _storage(text: str | None) -> dict | None:
    return None if text is None else json.loads(text)


def _fail(err: Exception) -> None:
    """The error as one line (it names where it happened), exit code 2."""
    text = " ".join(str(err).split())
    err_console.print(f"[bold red]error:[/] {text}", markup=True, highlight=False)
    raise typer.Exit(code=2)


@contextmanager
def _reported() -> Iterator[None]:
    """stellar-ray's errors, and values refused by a configuration, as one line each."""
    try:
        yield
    except (StellarRayError, ValueError) as err:
        _fail(err)


def _ray_logs() -> None:
    from .runtime import ray_log_dir, verbose

    if not verbose() and (where := ray_log_dir()):
        console.print(f"Ray's logs: {where} (--verbose shows them here)")


def _ingest_options(config: Path | None, grid: str | None, medium: str,
                    reader_values: dict[str, object], flags: dict[str, bool],
                    values: dict[str, object]):
    """The ingest YAML (if any) with what the command line gives on top of it."""
    from .config_files import load_config
    from .spectra.ingest import IngestOptions
    from .spectra.presets import parse_grid

    opts = load_config(IngestOptions, config) if config else IngestOptions()
    updates: dict = {name: on or getattr(opts, name) for name, on in flags.items()}
    updates.update({k: v for k, v in values.items() if v is not None})
    if grid is not None:
        updates["grid"] = parse_grid(grid, medium=medium)
    # only what is given: the YAML's reader settings (e.g. assume_medium) stay otherwise
    updates["reader"] = {**opts.reader.model_dump(),
                         **{k: v for k, v in reader_values.items() if v}}
    return load_config(IngestOptions, {**opts.model_dump(), **updates})


def _catalog_options(path: str | None, id_column: str | None, label_map: str | None,
                     missing: str | None) -> dict | None:
    """``--labels FILE --labels-id COL [--label-map a=B,...] [--missing 9999,...]``."""
    if path is None:
        if id_column or label_map or missing:
            raise ValueError("--labels-id, --label-map and --missing need --labels FILE")
        return None
    if not id_column:
        raise ValueError("--labels needs --labels-id COLUMN (the catalog's id column)")
    pairs = {}
    for item in filter(None, (label_map or "").split(",")):
        if "=" not in item:
            raise ValueError(f"--label-map entry '{item}' is not label=COLUMN")
        label, column = item.split("=", 1)
        pairs[label.strip()] = column.strip()
    try:
        sentinels = [float(x) for x in filter(None, (missing or "").split(","))]
    except ValueError as err:
        raise ValueError(f"--missing '{missing}' must be numbers separated by commas") from err
    return {"path": path, "id_column": id_column, "label_map": pairs, "missing": sentinels}


def _print_ingest(summary) -> None:
    console.print(f"ingested [bold]{summary.spectra}[/] spectra from {summary.files} files "
                  f"into {summary.shards} shards at {summary.url}")
    if summary.resumed_chunks:
        console.print(f"resumed: {summary.resumed_chunks} chunks were done by an earlier run")
    if summary.catalog_matched is not None:
        console.print(f"labels catalog: {summary.catalog_matched} spectra with a row, "
                      f"{summary.catalog_unmatched} without; {summary.catalog_unused} "
                      "catalog rows without a spectrum")
    if summary.assumed_medium:
        medium = summary.manifest.provenance.config["reader"]["assume_medium"]
        console.print(f"[yellow]{summary.assumed_medium} files did not state their wavelength "
                      f"medium[/] and were read as {medium} (--assume-medium)")
    if summary.mixed_resolution:
        console.print(f"[yellow]the spectra differ in resolution[/] "
                      f"({len(summary.mixed_resolution)} kinds): none recorded; "
                      "--degrade-to R brings them to one")
    if summary.rejects:
        console.print(f"[yellow]{len(summary.rejects)} set aside[/] (see "
                      f"{summary.url}/_rejects.parquet):")
        for r in summary.rejects[:10]:
            where = r.file + (f" row {r.row}" if r.row is not None else "")
            console.print(f"  {where}: {r.field or ''}: {r.reason}")
    if summary.dropped_labels:
        console.print(f"{summary.dropped_labels} label values dropped (labels not in the "
                      "first file; name them in the config's 'labels')")


IdPattern = Annotated[str | None, typer.Option(
    help="regex whose first group, searched in the id (default: the file name without "
    "its extension), is the id, e.g. 's(\\d{4})v'")]
LabelsFile = Annotated[str | None, typer.Option(
    "--labels", help="label catalog: CSV, text with a (#) header, FITS, Parquet, VOTable")]
LabelsId = Annotated[str | None, typer.Option(help="the catalog's id column")]
LabelMap = Annotated[str | None, typer.Option(
    help="dataset label = catalog column, comma-separated, e.g. teff=TEFF,logg=LOGG")]
Missing = Annotated[str | None, typer.Option(
    help="catalog values meaning null, comma-separated, e.g. 9999,99999")]


@app.command()
def ingest(
    sources: Annotated[list[str], typer.Argument(help="files, directories or globs (URLs)")],
    to: Annotated[str, typer.Option("--to", help="URL of the new dataset")],
    grid: Annotated[str | None, typer.Option(
        help="lrs, hrs, START:STOP:STEP (Å) or a grid YAML; default: the first file's grid")
    ] = None,
    medium: Annotated[str, typer.Option(help="medium of --grid: air or vacuum")] = "vacuum",
    assume_medium: Annotated[str | None, typer.Option(
        help="medium of files that do not state it (default: the YAML's reader."
        "assume_medium, else vacuum)")] = None,
    flux_unit: Annotated[str | None, typer.Option(
        help="flux unit of the dataset (astropy string; '' = normalised)")] = None,
    config: Annotated[Path | None, typer.Option(
        help="YAML file of ingest options (command-line values win)")] = None,
    noiseless: Annotated[bool, typer.Option(
        help="model spectra: store the flux as noiseless model flux, no uncertainties")
    ] = False,
    mask_nonfinite: Annotated[bool, typer.Option(
        help="mask NaN/inf flux pixels instead of rejecting the spectrum")] = False,
    estimate_sigma: Annotated[bool, typer.Option(
        help="estimate missing uncertainties with DER_SNR")] = False,
    id_key: Annotated[str | None, typer.Option(
        help="header keyword or column holding the spectrum id")] = None,
    id_pattern: IdPattern = None,
    labels: LabelsFile = None,
    labels_id: LabelsId = None,
    label_map: LabelMap = None,
    missing: Missing = None,
    resolution: Annotated[float | None, typer.Option(
        help="resolving power λ/Δλ of files that do not state it")] = None,
    fwhm: Annotated[float | None, typer.Option(
        help="LSF FWHM (Å) of files that do not state their resolution")] = None,
    degrade_to: Annotated[float | None, typer.Option(
        help="convolve every spectrum down to this resolving power (never sharpens)")
    ] = None,
    rows_per_shard: Annotated[int | None, typer.Option()] = None,
    files_per_task: Annotated[int | None, typer.Option(
        help="files per Ray task and commit record (default: about 64 tasks, 16-1024 files "
        "each)")] = None,
    survey: Annotated[str | None, typer.Option()] = None,
    mode: Annotated[str | None, typer.Option(help="instrument mode, e.g. LRS or HRS")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing dataset")] = False,
    address: Address = None,
    storage_options: StorageOptions = None,
) -> None:
    """Ingest FITS, HDF5, NumPy or CSV spectra into a sharded dataset (a killed run resumes
    when rerun as it was)."""
    from .spectra.ingest import ingest as run_ingest

    with _reported():
        opts = _ingest_options(
            config, grid, medium,
            reader_values={"assume_medium": assume_medium, "id_key": id_key,
                           "id_pattern": id_pattern},
            flags={"overwrite": overwrite, "mask_nonfinite": mask_nonfinite,
                   "estimate_sigma": estimate_sigma, "noiseless": noiseless},
            values={"flux_unit": flux_unit, "rows_per_shard": rows_per_shard,
                    "files_per_task": files_per_task, "survey": survey, "mode": mode,
                    "resolution": resolution, "fwhm": fwhm, "degrade_to": degrade_to,
                    "catalog": _catalog_options(labels, labels_id, label_map, missing)})
        summary = run_ingest(sources, to, opts, storage_options=_storage(storage_options),
                             address=address)
    _print_ingest(summary)


@app.command("label")
def label_command(
    dataset: Annotated[str, typer.Argument(help="URL of an existing dataset")],
    from_: Annotated[str, typer.Option(
        "--from", help="label catalog: CSV, text with a (#) header, FITS, Parquet, VOTable")],
    to: Annotated[str, typer.Option("--to", help="URL of the new, labelled dataset")],
    labels_id: Annotated[str, typer.Option(help="the catalog's id column")],
    label_map: LabelMap = None,
    missing: Missing = None,
    id_pattern: IdPattern = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing dataset at --to")
                         ] = False,
    address: Address = None,
    storage_options: StorageOptions = None,
) -> None:
    """Join a label catalog onto a dataset by id, into a new dataset (the old one stays)."""
    from .spectra.ingest.label_catalog import LabelCatalogOptions
    from .spectra.ingest.relabel import label_dataset

    with _reported():
        catalog = LabelCatalogOptions(**_catalog_options(from_, labels_id, label_map, missing))
        summary = label_dataset(dataset, catalog, to, id_pattern=id_pattern,
                                overwrite=overwrite, storage_options=_storage(storage_options),
                                address=address)
    console.print(f"labelled {summary.spectra} spectra into {summary.url} "
                  f"({', '.join(summary.labels)}): {summary.matched} with a catalog row, "
                  f"{summary.unmatched} without; {summary.catalog_unused} catalog rows "
                  "without a spectrum")


@app.command()
def simulate(
    config: Annotated[Path, typer.Argument(help="simulation YAML (see jobs/configs/)")],
    to: Annotated[str | None, typer.Option(
        "--to", help="URL of the new dataset (default: the file's to:)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace what is there")] = False,
    address: Address = None,
    storage_options: StorageOptions = None,
) -> None:
    """Simulate a 4MOST-style survey with the built-in generator."""
    from .simulation.survey import load_simulation_job
    from .simulation.survey import simulate as run_simulation

    with _reported():
        cfg, default_to = load_simulation_job(config)
        to = to or default_to
        if not to:
            raise ConfigError("no output; give --to or a to: line", where=str(config))
        m = run_simulation(cfg, to, storage_options=_storage(storage_options),
                           overwrite=overwrite, address=address)
    console.print(f"simulated {m.num_rows} {cfg.instrument_config().mode} spectra in "
                  f"{len(m.shards)} shards at {to}")


def _draw(text: str, option: str) -> dict:
    """``VALUE``, ``normal:MEAN:SD`` or ``uniform:LOW:HIGH`` as a Draw's fields."""
    parts = text.split(":")
    try:
        numbers = [float(x) for x in parts[1:]] if len(parts) > 1 else [float(parts[0])]
    except ValueError as err:
        raise ValueError(f"{option} '{text}': numbers expected") from err
    if len(parts) == 1:
        return {"kind": "fixed", "value": numbers[0]}
    if parts[0] == "normal" and len(numbers) == 2:
        return {"kind": "normal", "mean": numbers[0], "sd": numbers[1]}
    if parts[0] == "uniform" and len(numbers) == 2:
        return {"kind": "uniform", "low": numbers[0], "high": numbers[1]}
    raise ValueError(f"{option} '{text}': expected VALUE, normal:MEAN:SD or uniform:LOW:HIGH")


def _snr(text: str) -> dict:
    """``VALUE`` (fixed) or ``LOW:HIGH`` (log-uniform)."""
    try:
        numbers = [float(x) for x in text.split(":")]
    except ValueError as err:
        raise ValueError(f"--snr '{text}': expected VALUE or LOW:HIGH") from err
    if len(numbers) == 1:
        return {"kind": "fixed", "value": numbers[0]}
    if len(numbers) == 2:
        return {"kind": "loguniform", "low": numbers[0], "high": numbers[1]}
    raise ValueError(f"--snr '{text}': expected VALUE or LOW:HIGH")


def _instrument(text: str):
    """lrs, hrs (any case) or an instrument YAML."""
    from .config_files import load_config
    from .simulation.instrument import INSTRUMENTS, InstrumentConfig

    if text.upper() in INSTRUMENTS:
        return text.upper()
    if Path(text).suffix in (".yaml", ".yml"):
        return load_config(InstrumentConfig, Path(text))
    raise ValueError(f"--instrument '{text}': expected lrs, hrs or an instrument YAML")


def _emulator_prior(prior: Path | None, n: int | None, seed: int | None = None):
    """The prior of --prior YAML with --n and --seed over it; None if none is given."""
    from .config_files import load_config
    from .simulation.emulated import EmulatorPrior

    if prior is None and n is None:
        return None
    base = (yaml.safe_load(prior.read_text()) or {}) if prior else {}
    base.update({k: v for k, v in {"n": n, "seed": seed}.items() if v is not None})
    return load_config(EmulatorPrior, base)


@app.command("observe")
def observe_command(
    source: Annotated[str, typer.Argument(
        help="URL of a noiseless (model) dataset, or of an emulator artifact (with --prior "
        "or --labels)")],
    to: Annotated[str, typer.Option("--to", help="URL of the observed dataset")],
    instrument: Annotated[str | None, typer.Option(
        help="lrs, hrs or an instrument YAML (arms, resolving powers, grid)")] = None,
    config: Annotated[Path | None, typer.Option(
        help="observation YAML (instrument, rv, vsini, snr, noise, seed); options win")
    ] = None,
    rv: Annotated[str | None, typer.Option(
        help="radial velocity, km/s: VALUE, normal:MEAN:SD or uniform:LOW:HIGH")] = None,
    vsini: Annotated[str | None, typer.Option(
        help="rotation to apply, km/s, as --rv (stored as the label vsini)")] = None,
    snr: Annotated[str | None, typer.Option(help="S/N: VALUE or LOW:HIGH (log-uniform)")
                   ] = None,
    snr_per: Annotated[str | None, typer.Option(help="S/N per pixel or per angstrom")] = None,
    noise: Annotated[bool | None, typer.Option(
        "--noise/--no-noise", help="add noise (the noiseless flux is kept as model flux)")
    ] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    source_resolution: Annotated[float | None, typer.Option(
        help="resolving power of the source where its manifest does not record one")] = None,
    labels: Annotated[str | None, typer.Option(
        "--labels", help="emulator source: catalog of labels to emulate")] = None,
    labels_id: Annotated[str | None, typer.Option(help="the catalog's id column")] = None,
    prior: Annotated[Path | None, typer.Option(
        help="emulator source: prior YAML (n, seed, ranges, fixed)")] = None,
    n: Annotated[int | None, typer.Option(help="emulator source: spectra to draw")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace what is at --to")] = False,
    address: Address = None,
    storage_options: StorageOptions = None,
) -> None:
    """Observe model spectra through a spectrograph: LSF, rotation, RV, pixels, noise.
    From an emulator artifact, its spectra at the given or drawn labels are observed (and
    kept, noiseless, at <to>-emulated)."""
    from .artifact import is_artifact
    from .config_files import load_config
    from .simulation.emulated import observe_emulated
    from .simulation.observe import ObserveConfig, observe

    with _reported():
        base = yaml.safe_load(config.read_text()) or {} if config else {}
        if instrument is not None:
            base["instrument"] = _instrument(instrument)
        if snr is not None or snr_per is not None:
            base["snr"] = {**base.get("snr", {}), **(_snr(snr) if snr else {}),
                           **({"per": snr_per} if snr_per else {})}
        updates = {"rv": rv and _draw(rv, "--rv"), "vsini": vsini and _draw(vsini, "--vsini"),
                   "noise": noise, "seed": seed, "source_resolving_power": source_resolution}
        base.update({k: v for k, v in updates.items() if v is not None})
        cfg = load_config(ObserveConfig, base)
        so = _storage(storage_options)
        if is_artifact(source, so):
            m = observe_emulated(source, cfg, to, prior=_emulator_prior(prior, n),
                                 labels_path=labels, labels_id=labels_id,
                                 overwrite=overwrite, storage_options=so, address=address)
        else:
            if labels or prior or n:
                raise ValueError(f"{source} is a dataset: --labels, --prior and --n are for "
                                 "an emulator artifact as the source")
            m = observe(cfg, source, to, overwrite=overwrite, storage_options=so,
                        address=address)
    console.print(f"observed {m.num_rows} spectra at {cfg.instrument_config().mode} "
                  f"({m.npix} pixels) into {to}")


@app.command("emulate")
def emulate_command(
    artifact: Annotated[str, typer.Argument(help="URL of an emulator artifact")],
    to: Annotated[str, typer.Option("--to", help="URL of the new (noiseless) dataset")],
    labels: Annotated[str | None, typer.Option(
        "--labels", help="catalog with one column per emulator label (CSV, FITS, ...)")
    ] = None,
    labels_id: Annotated[str | None, typer.Option(help="the catalog's id column")] = None,
    prior: Annotated[Path | None, typer.Option(
        help="prior YAML (n, seed, ranges, fixed): uniform in the training domain")] = None,
    n: Annotated[int | None, typer.Option(help="spectra to draw from the prior")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the prior's draws")] = None,
    grid: Annotated[str | None, typer.Option(
        help="lrs, hrs, START:STOP:STEP (Å) or a grid YAML (TransformerPayne only; "
        "default: the emulator's grid)")] = None,
    outside: Annotated[str, typer.Option(
        help="labels outside the training domain: refuse, or flag (column outside_domain)")
    ] = "refuse",
    rows_per_shard: Annotated[int, typer.Option()] = 4096,
    overwrite: Annotated[bool, typer.Option(help="replace what is at --to")] = False,
    address: Address = None,
    storage_options: StorageOptions = None,
) -> None:
    """Write an emulator's spectra at given or prior-drawn labels as a dataset."""
    from .simulation.emulated import emulate
    from .spectra.presets import parse_grid

    with _reported():
        if outside not in ("refuse", "flag"):
            raise ValueError(f"--outside '{outside}': expected refuse or flag")
        drawn = _emulator_prior(prior, n, seed)
        m = emulate(artifact, to, prior=drawn, labels_path=labels, labels_id=labels_id,
                    grid=parse_grid(grid) if grid else None, outside=outside,
                    rows_per_shard=rows_per_shard, overwrite=overwrite,
                    storage_options=_storage(storage_options), address=address)
    console.print(f"emulated {m.num_rows} spectra ({m.npix} pixels) into {to}")


@app.command("library")
def library_command(
    sources: Annotated[list[str], typer.Argument(
        help="dataset URLs on one grid, highest priority first")],
    to: Annotated[str, typer.Option("--to", help="URL of the training library")],
    keys: Annotated[str, typer.Option(
        help="comma-separated labels whose exact combination is one model; also the axes "
        "of --split")] = "teff,logg,fe_h",
    split: Annotated[bool, typer.Option(
        "--split/--no-split", help="record the 2-train / 2-validation split in parameter "
        "space (columns in_train, in_validation)")] = False,
    augment: Annotated[int | None, typer.Option(
        help="record up to this many training copies of the most distinctive spectra "
        "(column copies)")] = None,
    repeat_fraction: Annotated[float, typer.Option(
        help="the share of spectra --augment repeats")] = 0.2,
    pixels: Annotated[int, typer.Option(
        help="pixels spectra are binned to when comparing them")] = 2048,
    overwrite: Annotated[bool, typer.Option(help="replace what is at --to")] = False,
    address: Address = None,
    storage_options: StorageOptions = None,
) -> None:
    """Build an SM-Net style training library: union by priority, split, augmentation."""
    from .runtime import init_ray
    from .simulation.libraries import LibraryConfig, build_library

    with _reported():
        cfg = LibraryConfig(sources=sources, keys=[k.strip() for k in keys.split(",")],
                            split=split, augment=augment, repeat_fraction=repeat_fraction,
                            pixels=pixels)
        init_ray(address)
        m = build_library(cfg, to, storage_options=_storage(storage_options),
                          overwrite=overwrite)
    extra = ", ".join(c.name for c in cfg.extra_columns())
    console.print(f"library of {m.num_rows} spectra from {len(sources)} sources into {to}"
                  + (f" (columns {extra})" if extra else ""))


@app.command("train")
def train_command(
    config: Annotated[Path, typer.Argument(help="training YAML (see jobs/configs/)")],
    address: Address = None,
) -> None:
    """Train a model with Ray Train and write its artifact."""
    from .training.config import TrainConfig
    from .training.run import train

    with _reported():
        cfg = TrainConfig.from_yaml(config)
        result = train(cfg, address=address, on_epoch=console.print)
    console.print(result.text(cfg.model))
    _ray_logs()


@app.command("tune")
def tune_command(
    config: Annotated[Path, typer.Argument(help="sweep YAML: base, search, scheduler")],
    address: Address = None,
) -> None:
    """Sweep hyperparameters with Ray Tune (ASHA or PBT)."""
    from .training.sweep import SweepConfig, sweep

    with _reported():
        summary = sweep(SweepConfig.from_yaml(config), address=address)
    console.print(f"{summary['trials']} trials; best {summary['params']} with "
                  f"val_loss {summary['metrics'].get('val_loss', float('nan')):.4g}")
    console.print(f"results: {summary['results']}; best configuration: "
                  f"{summary['best_config']}")


@app.command("infer")
def infer_command(
    model: Annotated[str | None, typer.Argument(
        help="URL of the model artifact (or an inference YAML, as with --config)")] = None,
    data: Annotated[str | None, typer.Argument(help="URL of the spectrum dataset")] = None,
    to: Annotated[str | None, typer.Option("--to", help="URL of the catalog")] = None,
    config: Annotated[Path | None, typer.Option(
        help="inference YAML (see jobs/configs/); arguments given here win")] = None,
    mode: Annotated[str | None, typer.Option(help="auto, predict, fit or gp")] = None,
    max_actors: Annotated[int | None, typer.Option(help="upper bound of the pool")] = None,
    batch_size: Annotated[int | None, typer.Option(help="spectra per model call")] = None,
    address: Address = None,
    storage_options: StorageOptions = None,
) -> None:
    """Run a trained model over a dataset into a Parquet catalog (resumable)."""
    from .config_files import load_config
    from .inference.config import InferConfig
    from .inference.pipeline import infer

    if config is None and model and model.lower().endswith((".yaml", ".yml")) and \
            Path(model).is_file():  # `stellar-ray infer job.yaml`, like `train` and `simulate`
        config, model = Path(model), None
    with _reported():
        base = yaml.safe_load(config.read_text()) if config else {}
        base.update({k: v for k, v in {"model": model, "data": data, "to": to, "mode": mode,
                                       "storage_options": _storage(storage_options)}.items()
                     if v is not None})
        actors = base.setdefault("actors", {})
        actors.update({k: v for k, v in {"max_actors": max_actors,
                                         "batch_size": batch_size}.items() if v is not None})
        summary = infer(load_config(InferConfig, base), address=address)
    console.print(summary.text())
    _ray_logs()
    if summary.failed_shards:
        raise typer.Exit(code=1)


@app.command("rv")
def rv_command(
    data: Annotated[str, typer.Argument(help="URL of the spectrum dataset")],
    templates: Annotated[str, typer.Option(
        help="URL of an emulator artifact or of a rest-frame dataset")],
    to: Annotated[str, typer.Option("--to", help="URL of the catalog")],
    n_templates: Annotated[int, typer.Option(
        help="templates emulated over the domain, or the first rows of a dataset")] = 16,
    rv_max: Annotated[float, typer.Option(help="search range ± km/s")] = 600.0,
    min_ccf: Annotated[float, typer.Option(
        help="a weaker correlation peak flags RV_UNRELIABLE")] = 0.3,
    max_actors: Annotated[int | None, typer.Option(help="upper bound of the pool")] = None,
    address: Address = None,
    storage_options: StorageOptions = None,
) -> None:
    """Measure radial velocities by cross-correlation into a catalog (resumable)."""
    from .config_files import load_config
    from .inference.config import RVConfig
    from .inference.rv import measure_velocities

    with _reported():
        cfg = {"data": data, "to": to, "storage_options": _storage(storage_options),
               "rv": {"measure": True, "templates": templates, "n_templates": n_templates,
                      "rv_max_kms": rv_max, "min_ccf": min_ccf}}
        if max_actors is not None:
            cfg["actors"] = {"max_actors": max_actors}
        summary = measure_velocities(load_config(RVConfig, cfg), address=address)
    console.print(summary.text())
    _ray_logs()
    if summary.failed_shards:
        raise typer.Exit(code=1)


catalog_app = typer.Typer(no_args_is_help=True, help="Work with result catalogs.")
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("to-fits")
def catalog_to_fits_command(
    catalog: Annotated[str, typer.Argument(help="URL of the catalog")],
    to: Annotated[str, typer.Option("--to", help="path or URL of the FITS file")],
    storage_options: StorageOptions = None,
) -> None:
    """Export a catalog as a FITS binary table."""
    from .spectra.catalog_fits import catalog_to_fits

    with _reported():
        rows = catalog_to_fits(catalog, to, _storage(storage_options))
    console.print(f"wrote {rows} rows to {to}")


@catalog_app.command("to-hats")
def catalog_to_hats_command(
    catalog: Annotated[str, typer.Argument(help="URL of the catalog")],
    to: Annotated[str, typer.Option("--to", help="URL of the HATS catalog (a folder)")],
    ra: Annotated[str, typer.Option(help="right ascension column, degrees")] = "ra",
    dec: Annotated[str, typer.Option(help="declination column, degrees")] = "dec",
    name: Annotated[str | None, typer.Option(help="catalog name (default: the folder's)")
                    ] = None,
    max_rows: Annotated[int, typer.Option(help="most rows per sky partition")] = 1_000_000,
    highest_order: Annotated[int, typer.Option(
        help="finest HEALPix order a partition may have")] = 9,
    overwrite: Annotated[bool, typer.Option(help="replace what is at --to")] = False,
    address: Address = None,
    storage_options: StorageOptions = None,
) -> None:
    """Write a catalog partitioned on the sky in the HATS layout, for LSDB."""
    from .runtime import init_ray
    from .spectra.catalog_hats import catalog_to_hats

    with _reported():
        init_ray(address)
        rows = catalog_to_hats(catalog, to, ra=ra, dec=dec, name=name, max_rows=max_rows,
                               highest_order=highest_order, overwrite=overwrite,
                               storage_options=_storage(storage_options))
    console.print(f"wrote {rows} rows to {to} (HATS; open it with lsdb.open_catalog)")


hml_app = typer.Typer(no_args_is_help=True, help="The hybrid method of paper 001 (blase3D): "
                      "clone a grid into Voigt lines, build the generator.")
app.add_typer(hml_app, name="hml")


def _with_options(config: Path | None, options: dict) -> dict:
    """A YAML configuration (or none) with the given command-line options over it."""
    base = (yaml.safe_load(config.read_text()) or {}) if config else {}
    base.update({k: v for k, v in options.items() if v is not None})
    return base


@hml_app.command("clone")
def hml_clone_command(
    grid: Annotated[str, typer.Argument(help="URL of a grid dataset (noiseless spectra "
                                        "with their labels)")],
    to: Annotated[str, typer.Option("--to", help="URL of the clone set")],
    config: Annotated[Path | None, typer.Option(help="clone YAML (prominence, "
                                                "continuum_degree, epochs, lr, ...)")] = None,
    prominence: Annotated[float | None, typer.Option(
        help="shallowest line kept, normalised flux")] = None,
    epochs: Annotated[int | None, typer.Option(help="Adam steps per batch")] = None,
    wing_pixels: Annotated[int | None, typer.Option(help="pixels each side of a line")
                           ] = None,
    max_lines: Annotated[int | None, typer.Option(help="most lines per spectrum")] = None,
    cpus_per_task: Annotated[float, typer.Option(help="CPUs per shard task")] = 1.0,
    gpus_per_task: Annotated[float, typer.Option(help="GPUs per shard task")] = 0.0,
    overwrite: Annotated[bool, typer.Option(help="replace what is at --to")] = False,
    address: Address = None,
    storage_options: StorageOptions = None,
) -> None:
    """Clone every grid spectrum into pseudo-Voigt lines (one Ray task per shard;
    rerun to resume)."""
    import numpy as np

    from .config_files import load_config
    from .hml.clone import CloneConfig
    from .hml.clone_job import clone_grid, read_clones

    with _reported():
        cfg = load_config(CloneConfig, _with_options(config, {
            "prominence": prominence, "epochs": epochs, "wing_pixels": wing_pixels,
            "max_lines": max_lines}))
        so = _storage(storage_options)
        clone_grid(grid, to, cfg, overwrite=overwrite, storage_options=so, address=address,
                   cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task)
        _, spectra, lines = read_clones(to, so)
    rms = spectra.column("rms").to_numpy()
    console.print(f"cloned {spectra.num_rows} spectra into {lines.num_rows} lines "
                  f"({lines.num_rows / max(spectra.num_rows, 1):.0f} per spectrum, median "
                  f"RMS residual {np.median(rms):.4f}) at {to}")


@hml_app.command("build")
def hml_build_command(
    clones: Annotated[str, typer.Argument(help="URL of a clone set (stellar-ray hml clone)")],
    to: Annotated[str, typer.Option("--to", help="URL of the generator artifact")],
    config: Annotated[Path | None, typer.Option(help="build YAML (labels, interpolation, "
                                                "match_pixels, ...)")] = None,
    labels: Annotated[str | None, typer.Option(
        help="comma-separated labels to interpolate over (default: those that vary)")
    ] = None,
    interpolation: Annotated[str | None, typer.Option(
        help="linear (rectilinear grids), rbf (any grid) or auto")] = None,
    match_pixels: Annotated[int | None, typer.Option(
        help="detections within this many pixels are one line")] = None,
    validate: Annotated[str | None, typer.Option(
        help="URL of spectra of known labels to check (and recalibrate) the "
        "uncertainties on")] = None,
    validate_mode: Annotated[str | None, typer.Option(
        help="the inference mode to validate: gp or fit")] = None,
    address: Address = None,
    storage_options: StorageOptions = None,
) -> None:
    """Identify each line across the grid and interpolate its parameters over the labels
    into a generator artifact (for stellar-ray infer, mode gp or fit)."""
    from .config_files import load_config
    from .hml.build import BuildConfig, build_generator

    with _reported():
        base = _with_options(config, {
            "labels": [x.strip() for x in labels.split(",")] if labels else None,
            "interpolation": interpolation, "match_pixels": match_pixels})
        if validate or validate_mode:
            base["validation"] = _with_options(None, {
                **(base.get("validation") or {}), "data": validate, "mode": validate_mode})
        cfg = load_config(BuildConfig, base)
        figures = build_generator(clones, to, cfg, storage_options=_storage(storage_options),
                                  address=address)
    console.print(f"built an HML generator of {figures['lines']:.0f} lines over "
                  f"{figures['nodes']:.0f} grid spectra at {to}")
    if cfg.validation is not None:
        from .artifact import load_artifact
        from .training.uncertainty import calibration_text

        artifact = load_artifact(to, _storage(storage_options))
        console.print(calibration_text(artifact.metadata.calibration, artifact.units))


@app.command("submit")
def submit_command(
    job: Annotated[str, typer.Argument(help="simulate, train, tune, infer or hml")],
    config: Annotated[str, typer.Option(help="the job's YAML, relative to --project")],
    address: Annotated[str, typer.Option(
        envvar="RAY_JOB_ADDRESS", help="the cluster's job server, e.g. http://HEAD:8265")
    ] = "http://127.0.0.1:8265",
    project: Annotated[Path, typer.Option(help="directory uploaded as the working "
                                          "directory (it holds jobs/)")] = Path("."),
    pass_env: Annotated[list[str] | None, typer.Option(
        "--pass-env", help="name of a local environment variable to set in the job "
        "(e.g. AWS_ACCESS_KEY_ID); values are never printed")] = None,
    follow: Annotated[bool, typer.Option(help="stream logs until the job ends")] = True,
    timeout: Annotated[float | None, typer.Option(help="stop the job after this many s")
                       ] = None,
) -> None:
    """Submit a job to a Ray cluster (Ray Jobs API), follow its logs, exit 1 if it fails."""
    import os

    from .submit import SubmitError, submit

    missing = [name for name in pass_env or [] if name not in os.environ]
    if missing:
        _fail(SubmitError(f"--pass-env {missing[0]}: not set in this environment"))
    env = {name: os.environ[name] for name in pass_env or []}
    try:
        outcome = submit(job, config, address, project, env=env, follow=follow,
                         echo=lambda line: console.print(line, markup=False, highlight=False),
                         timeout_s=timeout)
    except SubmitError as err:
        err_console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(code=1) from None
    console.print(f"job {outcome.job_id}: {outcome.status} after {outcome.seconds:.0f} s")


@app.command()
def info(url: str, storage_options: StorageOptions = None) -> None:
    """Print what a dataset holds (from its manifest)."""
    from .spectra.dataset import load_manifest

    with _reported():
        m = load_manifest(url, _storage(storage_options))
    table = Table(show_header=False)
    wave = m.grid.wavelength()
    table.add_row("spectra", f"{m.num_rows} in {len(m.shards)} shards")
    table.add_row("grid", f"{m.npix} pixels, {wave[0]:.2f}–{wave[-1]:.2f} Å ({m.grid.medium}),"
                  f" arms {', '.join(a.name for a in m.grid.arms)}")
    table.add_row("flux unit", m.flux_unit or "normalised")
    table.add_row("uncertainties", m.uncertainties + (" (model flux)" if m.model_flux else ""))
    for res in m.resolution:
        figure = (f"R = {res.resolving_power:.0f}" if res.resolving_power
                  else f"FWHM = {res.lsf_fwhm:.3f} Å")
        table.add_row("resolution", f"{figure} over {res.lo:.1f}–{res.hi:.1f} Å ({res.origin})")
    table.add_row("labels", ", ".join(f"{lab.name} ({lab.unit or '-'})" for lab in m.labels)
                  or "none")
    table.add_row("produced by", f"{m.provenance.producer} {m.provenance.code_version} "
                  f"at {m.provenance.created}")
    console.print(table)


@app.command()
def validate(url: str, storage_options: StorageOptions = None) -> None:
    """Check every shard of a dataset: checksums, schema, values, unique ids."""
    from .spectra.dataset import validate_dataset

    with _reported():
        m = validate_dataset(url, _storage(storage_options))
    console.print(f"[green]valid[/]: {m.num_rows} spectra in {len(m.shards)} shards")


@app.command("dashboard")
def dashboard_command(
    artifact: Annotated[list[str] | None, typer.Option(
        "--artifact", help="a model artifact (repeat for several): emulators are explored; "
        "any model traces the catalog's stars")] = None,
    catalog: Annotated[str | None, typer.Option(help="URL of a result catalog")] = None,
    data: Annotated[str | None, typer.Option(
        help="the catalog's input spectra (default: the dataset the catalog records)")
    ] = None,
    runs: Annotated[str | None, typer.Option(
        help="folder of training runs and sweeps (the output of train or tune)")] = None,
    config: Annotated[Path | None, typer.Option(help="dashboard YAML (the same fields)")
                      ] = None,
    host: Annotated[str | None, typer.Option(
        help="address to listen on (default 127.0.0.1; 0.0.0.0 opens it to the network)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8050; 0: any free one)")
                    ] = None,
    storage_options: StorageOptions = None,
) -> None:
    """Open emulators, a catalog and training runs in the browser."""
    from .config_files import load_config
    from .dashboard.app import DashboardConfig, serve

    with _reported():
        cfg = load_config(DashboardConfig, _with_options(config, {
            "artifacts": artifact or None, "catalog": catalog, "data": data, "runs": runs,
            "host": host, "port": port, "storage_options": _storage(storage_options)}))
        if cfg.port == 0:
            from .runtime import free_port

            cfg = cfg.model_copy(update={"port": free_port(cfg.host)})
        console.print(f"stellar-ray dashboard: http://{cfg.host}:{cfg.port}/ (Ctrl+C stops)")
        serve(cfg)


@app.command("threads")
def threads_command(
    probe: Annotated[bool, typer.Option("--probe", help="measure again")] = False,
) -> None:
    """The torch thread counts this machine runs fastest at (a one-time probe, cached)."""
    import os

    from .threads import THREADS_ENV, best_threads, measured_rates

    rates = measured_rates(refresh=probe)
    table = Table(title="fp32 matrix multiply, 256×1024 @ 1024×1024")
    table.add_column("threads", justify="right")
    table.add_column("GFLOP/s", justify="right")
    for threads, rate in sorted(rates.items()):
        table.add_row(str(threads), f"{rate:.1f}")
    console.print(table)
    cpus = os.cpu_count() or 1
    console.print(f"a process allotted {cpus} CPUs runs {best_threads(cpus)} torch threads"
                  f"{' (set by ' + THREADS_ENV + ')' if os.environ.get(THREADS_ENV) else ''}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="where everything goes")] = Path("demo-output"),
    epochs: Annotated[int | None, typer.Option(
        help="training epochs of the cINN (default: the demo's own)")] = None,
    address: Address = None,
) -> None:
    """Run the small end-to-end survey on the embedded defaults: simulate, train a cINN,
    catalogue a second survey, report against the Cramér–Rao bounds."""
    from .demo import run_demo
    from .runtime import init_ray

    init_ray(address)
    with _reported():
        run_demo(out, console, **({} if epochs is None else {"epochs": epochs}))
    _ray_logs()


if __name__ == "__main__":
    app()
