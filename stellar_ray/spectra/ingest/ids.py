"""Spectrum ids: the file name without its extension by default, ``#row`` inside multi-row
files, or a header keyword / column (``--id-key``), optionally cut by ``--id-pattern``.

Real file names carry dots (``lib_res2.50_s0001v.fits``,
``lte05800-4.50-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits``), so only a known extension is
removed, never everything after the first dot.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from ...errors import SpectraError

#: Extensions removed from a file name to make its id (longest first; case-insensitive).
ID_EXTENSIONS = (".fits.gz", ".fit.gz", ".fts.gz", ".fits", ".fit", ".fts", ".hdf5", ".h5",
                 ".he5", ".npz", ".csv")


def file_stem(source: str) -> str:
    """The file name of ``source`` (a path or URL, maybe ending in ``#row``) without a known
    extension: ``s3://b/lib_res2.50_s0001v.fits`` -> ``lib_res2.50_s0001v``."""
    name = PurePosixPath(source.split("://")[-1].split("#")[0]).name
    lower = name.lower()
    for ext in ID_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name


def row_suffix(row: int, nrows: int) -> str:
    """``#row`` for a spectrum of a multi-row file, nothing for a file's only spectrum."""
    return f"#{row}" if nrows > 1 else ""


def compile_id_pattern(pattern: str | None) -> re.Pattern | None:
    """The ``--id-pattern`` regex, checked: it must compile and have a group (the id)."""
    if pattern is None:
        return None
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise SpectraError(f"--id-pattern '{pattern}' is not a regular expression ({err})",
                           field="id_pattern") from err
    if compiled.groups < 1:
        raise SpectraError(f"--id-pattern '{pattern}' needs a group, e.g. 's(\\d{{4}})v': "
                           "its first group is the id", field="id_pattern")
    return compiled


def apply_id_pattern(base: str, pattern: re.Pattern | None, source: str) -> str:
    """The first group of ``pattern`` that matched, searched in ``base`` (``base`` itself
    without a pattern); raises :class:`SpectraError` when the pattern does not match."""
    if pattern is None:
        return base
    found = pattern.search(base)
    group = next((g for g in found.groups() if g), None) if found else None
    if group is None:
        raise SpectraError(f"--id-pattern '{pattern.pattern}' does not match '{base}'",
                           file=source, field="spectrum_id")
    return group


def id_key_for_matching(value: object) -> str:
    """An id as a join key: stripped text, with integers written without leading zeros so
    that a catalog column read as numbers (1) meets a file id '0001'."""
    text = str(value).strip()
    if text.lstrip("+-").isdigit():
        return str(int(text))
    return text
