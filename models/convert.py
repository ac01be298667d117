"""`mro convert`: HF safetensors <-> Orbax model directories, losslessly.

HF -> Orbax gives sharded, fast restores onto any mesh (models/orbax_io.py); Orbax -> HF
gives files other tools read (transformers with LLaDA's remote code, safetensors). Every
file that is not a weight (config.json, tokenizer files, remote code, generation config)
is copied byte for byte, and the weights keep their dtype, so HF -> Orbax -> HF gives
back the same tensors, bit for bit, and the same side files.

Host memory: the model is held once (on the devices of `mesh`, which on a CPU host is
host memory: 16 GB for LLaDA-8B in bfloat16) plus about one tensor while reading or
writing safetensors.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import numpy as np

from models import checkpoints, orbax_io
from models.config import DTYPES
from models.hf_config import load_hf_config
from mro.messages import quoted

FORMATS = ("hf", "orbax")
DEFAULT_SHARD_BYTES = 5_000_000_000  # as transformers' save_pretrained
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".gguf", ".tmp")


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
  """'5GB' -> 5_000_000_000; '500MiB' -> 524_288_000; '1000' -> 1000 (bytes)."""
  t = text.strip().upper().replace(" ", "")
  digits = t.rstrip("KMGTIB")
  unit = t[len(digits):]
  try:
    value = float(digits)
  except ValueError:
    value = -1.0
  if unit not in _UNITS or value <= 0:
    raise ValueError(f"bad size {quoted(text)}; use e.g. 5GB, 500MB, 2GiB")
  return int(value * _UNITS[unit])


def detect_format(model_dir: str | Path) -> str:
  d = Path(model_dir)
  if not (d / "config.json").is_file():
    raise ValueError(f"{d} is not a model directory (no config.json)")
  return "orbax" if orbax_io.is_orbax_model(d) else "hf"


def stored_dtype(model_dir: str | Path) -> str:
  """The one parameter dtype the weights are stored in (a ModelConfig dtype name)."""
  d = Path(model_dir)
  if detect_format(d) == "orbax":
    dtypes = orbax_io.saved_dtypes(d)
  else:
    dtypes = {info.dtype for info in checkpoints.tensor_infos(d).values()}
  names = {name for name, t in DTYPES.items() if np.dtype(t) in dtypes}
  if len(dtypes) != 1 or len(names) != 1:
    raise ValueError(f"{d}: weights are stored as {sorted(map(str, dtypes))}; conversion "
                     f"needs one dtype among {sorted(DTYPES)}")
  return names.pop()


def side_files(model_dir: Path) -> list[Path]:
  """Files of a model directory that are not weights (copied verbatim by a conversion)."""
  return sorted(p for p in model_dir.iterdir()
                if p.is_file() and p.name != checkpoints.INDEX_FILE
                and not p.name.endswith(_WEIGHT_SUFFIXES))


def convert(src: str | Path, dst: str | Path, *, to: str | None = None,
            max_shard_bytes: int = DEFAULT_SHARD_BYTES,
            mesh: jax.sharding.Mesh | None = None, dtype: str | None = None) -> Path:
  """Writes the model in `src` to the new directory `dst` in format `to` (default: the
  other format, or the same one when `dtype` changes). `mesh` places the weights in
  between (default: one device). `dtype` casts the weights (e.g. float32 -> bfloat16 to
  halve a shipped model; not lossless) and records it as config.json's torch_dtype."""
  src, dst = Path(src), Path(dst)
  source = detect_format(src)
  if dtype is not None and dtype not in DTYPES:
    raise ValueError(f"unknown dtype {quoted(dtype)}; choose one of {sorted(DTYPES)}")
  to = to or (source if dtype else "orbax" if source == "hf" else "hf")
  if to not in FORMATS:
    raise ValueError(f"unknown target format {quoted(to)}; choose one of {FORMATS}")
  if to == source and dtype is None:
    raise ValueError(f"{src} is already in {source} format")
  if max_shard_bytes <= 0:
    raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
  if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
    raise ValueError(f"{dst} exists and is not an empty directory; choose a new output")
  cfg, ids = load_hf_config(src, param_dtype=stored_dtype(src))
  state = _model_state(src, cfg, mesh)
  if dtype is not None:
    state = jax.tree.map(lambda x: x.astype(DTYPES[dtype]), state)
    cfg = dataclasses.replace(cfg, param_dtype=dtype)
  if jax.process_index() == 0:
    dst.mkdir(parents=True, exist_ok=True)
  if to == "orbax":
    orbax_io.save_state(dst, state)
  else:
    checkpoints.save_hf(dst, state, cfg, ids, max_shard_bytes=max_shard_bytes)
  if jax.process_index() == 0:  # config.json too: the original, not a regenerated one
    for f in side_files(src):
      shutil.copy2(f, dst / f.name)
    if dtype is not None:
      hf = json.loads((dst / "config.json").read_text())
      (dst / "config.json").write_text(json.dumps({**hf, "torch_dtype": dtype}, indent=2))
  return dst


def _model_state(src: Path, cfg, mesh):
  if orbax_io.is_orbax_model(src):
    return orbax_io.load_state(src, cfg, mesh=mesh)[1]
  return checkpoints.load_hf_state(src, cfg, mesh=mesh)[1]
