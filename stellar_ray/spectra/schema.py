"""The row schema of a spectrum dataset: columns, mask bits and the tensor column type.

Tensor columns (``flux``, ``sigma``, ``mask``) use Arrow's own
``arrow.fixed_shape_tensor`` extension type rather than a bare ``fixed_size_list`` or
Ray's tensor extension type:

* it records the pixel count in the type, so a shard of the wrong length cannot be
  mistaken for a valid one, and plain pyarrow (``to_numpy_ndarray``) or any Arrow reader
  gets the (B, L) array back without Ray installed;
* its storage is one contiguous ``fixed_size_list`` buffer, so Arrow ↔ numpy conversion
  is copy-free both ways;
* Ray Data hands it to numpy batches as a (B, L) array (a bare ``fixed_size_list``
  arrives as an object array of rows), while Ray's own tensor type is unreadable as a
  tensor outside Ray.

Whatever type a Ray stage produced, :func:`to_tensor_array` turns it back into the
native type before anything is written.
"""

from __future__ import annotations

import enum

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 1

ID_COLUMN = "spectrum_id"
TENSOR_COLUMNS = ("flux", "sigma", "mask")
#: Optional tensor column: the noiseless model flux of simulated spectra.
MODEL_FLUX = "model_flux"
TENSOR_DTYPES = {"flux": np.float32, "sigma": np.float32, "mask": np.uint8,
                 MODEL_FLUX: np.float32}


class MaskBit(enum.IntFlag):
    """Per-pixel quality bits stored in the ``mask`` column (uint8)."""

    NO_DATA = 1  # pixel outside the observed range or in a gap
    BAD_PIXEL = 2  # detector defect or pipeline-flagged bad pixel
    SKY_LINE = 4  # strong sky emission residual
    COSMIC_RAY = 8  # cosmic-ray hit
    SATURATED = 16  # saturated detector pixel
    INTERPOLATED = 32  # resampled from input pixels some of which were unusable
    NONFINITE_INPUT = 64  # input flux was NaN or infinite and was masked on request


#: Pixels with any of these bits carry no usable flux: their flux is stored as 0 and
#: their sigma as +inf (zero inverse variance).
UNUSABLE = (
    MaskBit.NO_DATA
    | MaskBit.BAD_PIXEL
    | MaskBit.COSMIC_RAY
    | MaskBit.SATURATED
    | MaskBit.NONFINITE_INPUT
)


#: Standard per-spectrum metadata: name -> (Arrow type, unit or None, description).
STANDARD_METADATA: dict[str, tuple[pa.DataType, str | None, str]] = {
    "ra": (pa.float64(), "deg", "right ascension (ICRS)"),
    "dec": (pa.float64(), "deg", "declination (ICRS)"),
    "snr": (pa.float32(), None, "median S/N per pixel"),
    "survey": (pa.string(), None, "survey or library name"),
    "mode": (pa.string(), None, "instrument mode, e.g. LRS or HRS"),
    "rv": (pa.float32(), "km/s", "radial velocity"),
    "object": (pa.string(), None, "object name from the source file"),
    "source": (pa.string(), None, "where the spectrum came from: file and row"),
}

#: The sky position columns (degrees, ICRS) that catalogs carry from their spectra.
POSITION_COLUMNS = ("ra", "dec")

ARROW_TYPES: dict[str, pa.DataType] = {
    "float64": pa.float64(),
    "float32": pa.float32(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "string": pa.string(),
    "bool": pa.bool_(),
}


def tensor_type(dtype: np.dtype | type, npix: int) -> pa.DataType:
    """The Arrow type of a tensor column holding ``npix`` values of ``dtype`` per row."""
    return pa.fixed_shape_tensor(pa.from_numpy_dtype(np.dtype(dtype)), [npix])


def to_tensor_array(values: np.ndarray, dtype: np.dtype | type) -> pa.ExtensionArray:
    """(B, L) numpy array -> Arrow fixed-shape tensor array (no copy if already C-contiguous
    and of ``dtype``)."""
    arr = np.ascontiguousarray(values, dtype=dtype)
    if arr.ndim != 2:
        raise ValueError(f"tensor column needs a (B, L) array, got shape {arr.shape}")
    return pa.FixedShapeTensorArray.from_numpy_ndarray(arr)


def tensor_to_numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Arrow tensor column (native, Ray's, or a fixed-size list) -> (B, L) numpy array.

    Copy-free for a single-chunk native column; chunked columns are concatenated once.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if isinstance(column, pa.FixedShapeTensorArray):
        return column.to_numpy_ndarray()
    if isinstance(column.type, pa.BaseExtensionType):
        # Ray's tensor extension type: let it produce the ndarray.
        return np.asarray(column.to_numpy(zero_copy_only=False))
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
        flat = column.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(column), width)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return np.stack([np.asarray(v) for v in column.to_numpy(zero_copy_only=False)])
    raise TypeError(f"not a tensor column: {column.type}")


def quantile_column(label: str, q: float) -> str:
    """Catalog column of quantile ``q`` of ``label``, e.g. teff_q16 or teff_q2.5."""
    return f"{label}_q{q * 100:g}"
