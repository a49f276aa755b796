"""``stellar-ray catalog to-hats``: a catalog partitioned on the sky in the HATS layout
(Hierarchical Adaptive Tiling Scheme, the IVOA note LSDB reads), so that LSDB opens it,
cross-matches it with Gaia and other HATS catalogs, and reads only the sky it is asked for.

Ray tasks do the work, so a catalog of millions of rows never sits in one process:

1. per catalog part: the counts of its positions per HEALPix pixel at ``highest_order``;
2. the driver merges the counts and lets hats' own alignment grow pixels into partitions of
   at most ``max_rows`` rows (sparse sky: large pixels; dense sky: small ones);
3. per part: each row gets the spatial index ``_healpix_29`` (its HEALPix pixel at order 29)
   and goes to its partition's scratch fragment;
4. per partition: the fragments, sorted by ``_healpix_29``, become
   ``dataset/Norder=K/Dir=D/Npix=N.parquet`` (written atomically);
5. hats' writers add ``partition_info.csv``, ``dataset/_metadata`` and
   ``_common_metadata``, and ``hats.properties`` last, so that a catalog cut short never
   reads as complete.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from hats.catalog import PartitionInfo, TableProperties
from hats.io import paths, write_parquet_metadata
from hats.pixel_math import HealpixPixel
from hats.pixel_math.partition_stats import empty_histogram, generate_alignment
from hats.pixel_math.spatial_index import (
    SPATIAL_INDEX_COLUMN,
    SPATIAL_INDEX_ORDER,
    compute_spatial_index,
)
from upath import UPath

from ..errors import SpectraError
from .catalog import CatalogPart, load_catalog_manifest, read_part
from .dataset import put_table
from .schema import ID_COLUMN
from .storage import join, resolve

SCRATCH = "_partitioning"


def _positions(table: pa.Table, ra: str, dec: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees; a row without a position is refused by its id."""
    for name in (ra, dec):
        if name not in table.column_names:
            raise SpectraError("the catalog has no such column (carry the dataset's sky "
                               "positions, or name the columns with --ra/--dec)", file=where,
                               field=name)
    ra_v = table.column(ra).to_numpy(zero_copy_only=False).astype(np.float64)
    dec_v = table.column(dec).to_numpy(zero_copy_only=False).astype(np.float64)
    bad = ~(np.isfinite(ra_v) & np.isfinite(dec_v) & (np.abs(dec_v) <= 90))
    if bad.any():
        first = table.column(ID_COLUMN)[int(np.argmax(bad))].as_py()
        raise SpectraError(f"{int(bad.sum())} rows have no valid sky position (first: "
                           f"'{first}'); HATS places every row on the sky", file=where,
                           field=ra)
    return ra_v % 360.0, dec_v


@ray.remote
def _count(url: str, part: CatalogPart, ra: str, dec: str, order: int,
           storage_options: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, counts) of one part's rows at HEALPix ``order``."""
    table = read_part(url, part, storage_options, columns=[ID_COLUMN, ra, dec])
    ra_v, dec_v = _positions(table, ra, dec, f"{url}/{part.path}")
    pixels = compute_spatial_index(ra_v, dec_v) >> (2 * (SPATIAL_INDEX_ORDER - order))
    return np.unique(pixels, return_counts=True)


def _fragment_name(order: int, pixel: int, key: str) -> str:
    return f"{SCRATCH}/{order}-{pixel}/{hashlib.sha256(key.encode()).hexdigest()[:24]}.parquet"


@ray.remote
def _split(url: str, part: CatalogPart, to: str, ra: str, dec: str, order: int,
           source: np.ndarray, destination: np.ndarray, storage_options: dict | None
           ) -> list[tuple[int, int]]:
    """One part's rows, with their spatial index, into a fragment per partition; returns
    the partitions (order, pixel) it wrote to."""
    table = read_part(url, part, storage_options)
    index = compute_spatial_index(*_positions(table, ra, dec, f"{url}/{part.path}"))
    at = np.searchsorted(source, index >> (2 * (SPATIAL_INDEX_ORDER - order)))
    dest = destination[at]  # (N, 2): order, pixel
    table = table.append_column(SPATIAL_INDEX_COLUMN, pa.array(index, pa.int64()))
    written = []
    for o, p in np.unique(dest, axis=0):
        rows = np.flatnonzero((dest[:, 0] == o) & (dest[:, 1] == p))
        put_table(to, _fragment_name(int(o), int(p), part.key), table.take(rows),
                  storage_options)
        written.append((int(o), int(p)))
    return written


@ray.remote
def _gather(to: str, order: int, pixel: int, storage_options: dict | None) -> int:
    """One partition's fragments as its HATS file, sorted by the spatial index; rows."""
    fs, base = resolve(to, storage_options)
    folder = join(base, f"{SCRATCH}/{order}-{pixel}")
    files = sorted(fs.ls(folder, detail=False))
    table = pa.concat_tables([pq.read_table(f, filesystem=fs) for f in files])
    table = table.take(pc.sort_indices(table, [(SPATIAL_INDEX_COLUMN, "ascending")]))
    put_table(to, _pixel_path(HealpixPixel(order, pixel)), table, storage_options)
    return table.num_rows


def _pixel_path(pixel: HealpixPixel) -> str:
    """The partition's file under the catalog, as hats names it."""
    return (f"{paths.DATASET_DIR}/{paths.PARTITION_ORDER}={pixel.order}/"
            f"{paths.PARTITION_DIR}={pixel.dir}/{paths.PARTITION_PIXEL}={pixel.pixel}.parquet")


def _alignment(counts: list[tuple[np.ndarray, np.ndarray]], order: int, max_rows: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(occupied pixels at ``order`` (M,) sorted, their partitions (M, 2) as (order,
    pixel)) by hats' alignment of the summed counts."""
    histogram = empty_histogram(order)
    for pixels, n in counts:
        np.add.at(histogram, pixels, n)
    alignment = generate_alignment(histogram, highest_order=order, threshold=max_rows,
                                   drop_empty_siblings=True)
    source = np.flatnonzero(histogram)
    destination = np.array([alignment[p][:2] for p in source], dtype=np.int64)
    return source, destination.reshape(-1, 2)


def catalog_to_hats(url: str, to: str, *, ra: str = "ra", dec: str = "dec",
                    name: str | None = None, max_rows: int = 1_000_000,
                    highest_order: int = 9, overwrite: bool = False,
                    storage_options: dict | None = None, **task_options: Any) -> int:
    """Write the catalog at ``url`` as a HATS catalog at ``to`` (``name``: its
    obs_collection, default the folder's name); returns its rows. Partitions hold at most
    ``max_rows`` rows unless one pixel at ``highest_order`` (≈ 0.013 deg² at 9) holds more.
    ``task_options`` go to the Ray tasks (e.g. num_cpus)."""
    manifest = load_catalog_manifest(url, storage_options)
    fs, base = resolve(to, storage_options)
    if fs.exists(base):
        if not overwrite:
            raise SpectraError("already exists (overwrite to replace it)", file=to)
        fs.rm(base, recursive=True)
    options = {"num_cpus": 1, **task_options}
    parts = manifest.parts
    counts = ray.get([_count.options(**options).remote(url, p, ra, dec, highest_order,
                                                       storage_options) for p in parts])
    source, destination = _alignment(counts, highest_order, max_rows)
    written = ray.get([_split.options(**options).remote(
        url, p, to, ra, dec, highest_order, source, destination, storage_options)
        for p in parts])
    partitions = sorted({d for w in written for d in w})
    rows = ray.get([_gather.options(**options).remote(to, o, p, storage_options)
                    for o, p in partitions])
    fs.rm(join(base, SCRATCH), recursive=True)
    root = UPath(to, **(storage_options or {}))
    PartitionInfo.from_healpix([HealpixPixel(o, p) for o, p in partitions]).write_to_file(
        catalog_path=root)
    write_parquet_metadata(root)
    total = int(sum(rows))
    TableProperties(catalog_name=name or base.rstrip("/").rsplit("/", 1)[-1],
                    catalog_type="object", total_rows=total, ra_column=ra, dec_column=dec,
                    healpix_column=SPATIAL_INDEX_COLUMN, healpix_order=SPATIAL_INDEX_ORDER,
                    hats_max_rows=max(rows, default=0)).to_properties_file(root)
    return total
