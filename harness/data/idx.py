"""Reader for the IDX format of MNIST-style datasets (gzip or raw).

Our own reader, not torchvision's, so the Debian `dataset-fashion-mnist` files load with one
`np.frombuffer` (about half a second for all 70,000 images) and a corrupt file names its path.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from harness.errors import DataUnavailableError

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08


class IdxFormatError(DataUnavailableError):
    """An IDX file exists but is truncated, corrupt or not unsigned-byte data."""


def read_idx(path: Path, expected_ndim: int | None = None) -> np.ndarray:
    """The array stored in an IDX file (`.gz` or raw, detected from the bytes, not the name)."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0:2] != b"\x00\x00":
        raise IdxFormatError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != _UBYTE:
        raise IdxFormatError(f"{path}: IDX data type 0x{dtype_code:02x} is not supported (only uint8)")
    if expected_ndim is not None and ndim != expected_ndim:
        raise IdxFormatError(f"{path}: expected a {expected_ndim}-d IDX array, the header says {ndim}-d")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxFormatError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != int(np.prod(shape)):
        raise IdxFormatError(
            f"{path}: IDX header promises shape {shape} ({int(np.prod(shape))} bytes) "
            f"but the file holds {len(raw) - header} bytes of data"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _read_bytes(path: Path) -> bytearray:
    """File contents, gunzipped when gzip; a bytearray so torch can wrap it without a copy warning."""
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise IdxFormatError(f"{path}: corrupt gzip file ({error})") from error
    return bytearray(data)


def find_idx_file(directory: Path, stem: str) -> Path | None:
    """`directory/stem` or `directory/stem.gz`, whichever exists (raw first), else None."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None
