"""The safetensors file format, read lazily and written as a stream.

The `safetensors` package's numpy reader cannot return bfloat16 (LLaDA-8B's dtype) and
its writer needs every tensor of a file in memory at once. This module reads the format
directly: the JSON header gives each tensor's dtype, shape and byte range, and a tensor
(or any slice of it, transposed or not) is copied out of a read-only memory map block by
block, releasing each block's pages, so reading holds little more than the result.
Writing computes the header from the shapes first and then appends tensors one at a time.

Format: u64 little-endian header length N, N bytes of JSON (padded with spaces to a
multiple of 8), then the tensors' bytes, C order, little-endian.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

import ml_dtypes
import numpy as np

from mro.messages import quoted

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
_CODES = {np.dtype(t): code for code, t in _DTYPES.items()}
_MAX_HEADER = 100_000_000


class TensorInfo:
  """Where one tensor lives in a file."""

  __slots__ = ("path", "name", "dtype", "shape", "offset")

  def __init__(self, path: Path, name: str, dtype: np.dtype, shape: tuple[int, ...],
               offset: int):
    self.path, self.name, self.dtype, self.shape, self.offset = path, name, dtype, shape, offset

  @property
  def nbytes(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

  def read(self, index: tuple[slice, ...] | None = None, dtype=None,
           transpose: bool = False, block_bytes: int = 16 * 2**20) -> np.ndarray:
    """A new C-ordered array: `tensor[index]` (of `tensor.T[index]` when `transpose`, for
    2-D tensors), converted to `dtype`. The file is memory-mapped and copied block by
    block, each block's pages released once copied, so the host holds the result plus
    about `block_bytes`, whatever the tensor's size."""
    dtype = np.dtype(dtype or self.dtype)
    ndim = len(self.shape)
    if transpose and ndim != 2:
      raise ValueError(f"{self.name}: only 2-D tensors can be transposed")
    index = tuple(index) if index is not None else (slice(None),) * ndim
    source_index = index[::-1] if transpose else index
    ranges = [range(*sl.indices(n)) for sl, n in zip(source_index, self.shape)]
    if any(r.step != 1 for r in ranges):
      raise ValueError(f"{self.name}: strided reads are not supported")
    piece = tuple(len(r) for r in ranges)
    out = np.empty(piece[::-1] if transpose else piece, dtype)
    if out.size == 0:
      return out
    row_bytes = self.nbytes // self.shape[0]
    rows = max(1, block_bytes // max(row_bytes, 1))
    start = self.offset - self.offset % mmap.ALLOCATIONGRANULARITY
    with self.path.open("rb") as f:
      mm = mmap.mmap(f.fileno(), self.offset + self.nbytes - start, access=mmap.ACCESS_READ,
                     offset=start)
    try:
      source = np.frombuffer(mm, self.dtype, count=self.nbytes // self.dtype.itemsize,
                             offset=self.offset - start).reshape(self.shape)
      first = ranges[0].start
      for r0 in range(0, piece[0], rows):
        r1 = min(r0 + rows, piece[0])
        block = source[(slice(first + r0, first + r1),) + tuple(source_index[1:])]
        if transpose:
          out[:, r0:r1] = block.T
        else:
          out[r0:r1] = block
        del block
        lo = self.offset - start + (first + r0) * row_bytes
        hi = self.offset - start + (first + r1) * row_bytes
        lo -= lo % mmap.PAGESIZE
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
      del source
    finally:
      mm.close()
    return out


def read_header(path: str | Path) -> dict[str, TensorInfo]:
  """Tensor name -> TensorInfo, from the header alone (no tensor data is read)."""
  path = Path(path)
  size = path.stat().st_size
  with path.open("rb") as f:
    raw = f.read(8)
    if len(raw) < 8:
      raise ValueError(f"{path} is not a safetensors file (shorter than 8 bytes)")
    (n,) = struct.unpack("<Q", raw)
    if n > min(_MAX_HEADER, size - 8):
      raise ValueError(f"{path} is not a safetensors file (header length {n})")
    try:
      header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f"{path}: the safetensors header is not valid JSON: {e}") from e
  if not isinstance(header, dict):
    raise ValueError(f"{path}: the safetensors header must be a JSON object (tensor name -> "
                     f"dtype, shape, data_offsets), got a JSON {_json_type(header)}")
  start = 8 + n
  out = {}
  for name, entry in header.items():
    if name == "__metadata__":
      continue
    info, (begin, end) = _tensor_info(path, name, entry, start)
    if end - begin != info.nbytes or start + end > size:
      raise ValueError(f"{path}: tensor {quoted(name)} {info.shape} {entry['dtype']} does not "
                       f"fit its byte range [{begin}, {end}) (file is truncated or corrupt)")
    out[name] = info
  return out


def _json_type(value) -> str:
  return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
          float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _tensor_info(path: Path, name: str, entry,
                 start: int) -> tuple[TensorInfo, tuple[int, int]]:
  """One header entry as a TensorInfo and its data_offsets, or a ValueError naming the file
  and the tensor when the entry is not of the format's types."""
  where = f"{path}: tensor {quoted(name)}"
  if not isinstance(entry, dict):
    raise ValueError(f"{where}: its header entry must be a JSON object, got a JSON "
                     f"{_json_type(entry)}")
  code, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
  if not isinstance(code, str) or code not in _DTYPES:
    raise ValueError(f"{where} has dtype {quoted(code)}; supported: {sorted(_DTYPES)}")
  if not _naturals(shape):
    raise ValueError(f"{where}: shape must be a list of non-negative integers, got "
                     f"{quoted(shape)}")
  if not (_naturals(offsets) and len(offsets) == 2 and offsets[0] <= offsets[1]):
    raise ValueError(f"{where}: data_offsets must be [begin, end] byte offsets, got "
                     f"{quoted(offsets)}")
  info = TensorInfo(path, name, np.dtype(_DTYPES[code]), tuple(shape), start + offsets[0])
  return info, (offsets[0], offsets[1])


def _naturals(value) -> bool:
  return isinstance(value, list) and all(
      isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


def write_file(path: str | Path, specs: Iterable[tuple[str, tuple[int, ...], np.dtype]],
               fetch: Callable[[str], np.ndarray], metadata: dict[str, str] | None = None) -> int:
  """Writes one safetensors file from (name, shape, dtype) specs, calling `fetch(name)` for
  each tensor only when its bytes are written, so one tensor is in memory at a time.

  Writes to `path.tmp` and renames it into place. Returns the bytes of tensor data.
  """
  path = Path(path)
  header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
  specs = list(specs)
  offset = 0
  for name, shape, dtype in specs:
    dtype = np.dtype(dtype)
    if dtype not in _CODES:
      raise ValueError(f"tensor {name}: dtype {dtype} cannot be stored in safetensors")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    header[name] = {"dtype": _CODES[dtype], "shape": list(shape),
                    "data_offsets": [offset, offset + nbytes]}
    offset += nbytes
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)
  tmp = path.with_name(path.name + ".tmp")
  with tmp.open("wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for name, shape, dtype in specs:
      array = np.asarray(fetch(name))
      if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
        raise ValueError(f"tensor {name}: got {array.dtype}{list(array.shape)}, planned "
                         f"{np.dtype(dtype)}{list(shape)}")
      f.write(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)  # little-endian hosts
      del array
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  return offset
