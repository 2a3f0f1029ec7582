"""Reading IDX files (the MNIST / Fashion-MNIST format), plain or gzipped, with numpy only."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

__all__ = ["IDX_DTYPES", "read_idx", "write_idx"]

# IDX type byte -> numpy dtype (big-endian, as the format stores multi-byte numbers).
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _open(path: Path):
    # Sniff the gzip magic instead of trusting the suffix: mirrors ship both spellings.
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def read_idx(path) -> np.ndarray:
    """The array stored in an IDX file (`.gz` or not), shaped by its header, native byte order."""
    path = Path(path)
    with _open(path) as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (its first two bytes must be zero)")
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        accepted = ", ".join(f"0x{t:02X}" for t in IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX type 0x{type_code:02X}; accepted: {accepted}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes for {ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path}: {len(data)} bytes, but its header {shape} of {dtype} needs {expected}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write `array` as an IDX file (gzipped when compress, or when path ends in .gz)."""
    from dkvb_nlp.io import atomic_write_bytes

    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"dtype {array.dtype} has no IDX type; accepted: {', '.join(map(str, codes))}")
    header = bytes([0, 0, codes[native], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = array.astype(IDX_DTYPES[codes[native]], copy=False).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    payload = gzip.compress(header + body, mtime=0) if compress else header + body
    return atomic_write_bytes(path, payload)
