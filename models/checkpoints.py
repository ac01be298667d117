"""Hugging Face LLaDA checkpoints: strict, tensor-by-tensor reading and writing.

A model directory holds `config.json` and either `model.safetensors` or sharded files
listed in `model.safetensors.index.json`. Reading is strict: every missing, unexpected
or mis-shaped weight is reported (all of them, with names and shapes) before anything is
returned. Tensors are read one at a time and placed straight onto their target sharding,
so peak host memory stays near the largest single tensor.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from models.config import ModelConfig, SpecialIds, load_hf_config, to_hf_dict
from models.transformer import Transformer, abstract_model

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_PREFIX = "model.transformer."
_BLOCK_ATTN = ("q_proj", "k_proj", "v_proj", "attn_out")
_BLOCK_MLP = ("ff_proj", "up_proj", "ff_out")


def hf_name_map(cfg: ModelConfig) -> dict[str, tuple[tuple, bool]]:
  """HF tensor name -> (path in our nnx state, whether torch's [out, in] needs transposing)."""
  names = {
      _PREFIX + "wte.weight": (("wte",), False),
      _PREFIX + "ln_f.weight": (("ln_f", "weight"), False),
      _PREFIX + "ff_out.weight": (("ff_out", "kernel"), True),
  }
  for i in range(cfg.n_layers):
    pre = f"{_PREFIX}blocks.{i}."
    names[pre + "attn_norm.weight"] = (("blocks", i, "attn_norm", "weight"), False)
    names[pre + "ff_norm.weight"] = (("blocks", i, "ff_norm", "weight"), False)
    for n in _BLOCK_ATTN:
      names[pre + f"{n}.weight"] = (("blocks", i, "attn", n, "kernel"), True)
    for n in _BLOCK_MLP:
      names[pre + f"{n}.weight"] = (("blocks", i, n, "kernel"), True)
  return names


def _get(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def weight_files(model_dir: str | Path) -> dict[str, Path]:
  """Tensor name -> file that holds it, for single-file and sharded checkpoints."""
  model_dir = Path(model_dir)
  index, single = model_dir / INDEX_FILE, model_dir / SINGLE_FILE
  if index.is_file():
    try:
      weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
      raise ValueError(f"{index} is not a valid safetensors index: {e}") from e
    files = {name: model_dir / f for name, f in weight_map.items()}
    for f in sorted(set(files.values())):
      if not f.is_file():
        raise ValueError(f"{index} lists {f.name}, which does not exist")
    return files
  if single.is_file():
    with safe_open(single, framework="numpy") as f:
      return {name: single for name in f.keys()}
  raise ValueError(f"{model_dir} has neither {SINGLE_FILE} nor {INDEX_FILE}")


def _tensor_shapes(files: dict[str, Path]) -> dict[str, tuple[int, ...]]:
  shapes = {}
  by_file: dict[Path, list[str]] = {}
  for name, f in files.items():
    by_file.setdefault(f, []).append(name)
  for f, names in by_file.items():
    with safe_open(f, framework="numpy") as h:
      for name in names:
        shapes[name] = tuple(h.get_slice(name).get_shape())
  return shapes


def check_names_and_shapes(cfg: ModelConfig, shapes: dict[str, tuple[int, ...]]) -> None:
  """Raises one ValueError listing every missing, unexpected and mis-shaped tensor."""
  _, abstract = abstract_model(cfg)
  expected = {}
  for name, (path, transpose) in hf_name_map(cfg).items():
    shape = tuple(_get(abstract, path).shape)
    expected[name] = shape[::-1] if transpose else shape
  problems = [f"missing weight {n} (expected shape {expected[n]})"
              for n in sorted(set(expected) - set(shapes))]
  problems += [f"unexpected weight {n} with shape {shapes[n]}"
               for n in sorted(set(shapes) - set(expected))]
  problems += [f"weight {n} has shape {shapes[n]}, expected {expected[n]}"
               for n in sorted(set(shapes) & set(expected)) if shapes[n] != expected[n]]
  if problems:
    raise ValueError("checkpoint does not match the model config:\n  " + "\n  ".join(problems))


def iter_hf_tensors(files: dict[str, Path]) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (name, array) one tensor at a time, opening each file once."""
  by_file: dict[Path, list[str]] = {}
  for name, f in files.items():
    by_file.setdefault(f, []).append(name)
  for f in sorted(by_file):
    with safe_open(f, framework="numpy") as h:
      for name in sorted(by_file[f]):
        yield name, h.get_tensor(name)


def load_hf_state(model_dir: str | Path, cfg: ModelConfig,
                  sharding_of: Callable[[tuple], jax.sharding.Sharding] | None = None):
  """Reads a HF LLaDA checkpoint into an nnx state (graphdef, state) for `cfg`.

  `sharding_of(path)` gives each weight's target sharding; by default weights land on the
  default device. Each tensor is converted and placed before the next one is read.
  """
  files = weight_files(model_dir)
  check_names_and_shapes(cfg, _tensor_shapes(files))
  graphdef, state = abstract_model(cfg)
  mapping = hf_name_map(cfg)
  dtype = cfg.jnp_param_dtype
  for name, array in iter_hf_tensors(files):
    path, transpose = mapping[name]
    if transpose:
      array = np.ascontiguousarray(array.T)
    value = jnp.asarray(array, dtype=dtype) if sharding_of is None else jax.device_put(
        array.astype(jnp.dtype(dtype)), sharding_of(path))
    _get(state, path[:-1])[path[-1]] = nnx.Param(value, **_get(state, path).get_metadata())
    del array
  return graphdef, state


def load_model(model_dir: str | Path, **config_overrides) -> tuple[Transformer, ModelConfig,
                                                                     SpecialIds]:
  """A ready model from a HF-format directory (config.json + safetensors)."""
  cfg, ids = load_hf_config(model_dir, **config_overrides)
  graphdef, state = load_hf_state(model_dir, cfg)
  return nnx.merge(graphdef, state), cfg, ids


def save_hf(model_dir: str | Path, state, cfg: ModelConfig, ids: SpecialIds,
            max_shard_bytes: int | None = None) -> None:
  """Writes config.json + safetensors (sharded with an index above `max_shard_bytes`).

  Files are written to temporary names and renamed, so a crash leaves either the old
  checkpoint or the new one, never a torn file.
  """
  model_dir = Path(model_dir)
  model_dir.mkdir(parents=True, exist_ok=True)
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, (path, transpose) in hf_name_map(cfg).items():
    array = np.asarray(jax.device_get(_get(state, path)[...]))
    array = np.ascontiguousarray(array.T) if transpose else array
    if max_shard_bytes and shards[-1] and size + array.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = array
    size += array.nbytes
  written = []
  if len(shards) == 1:
    written.append((SINGLE_FILE, shards[0]))
  else:
    n = len(shards)
    written += [(f"model-{i + 1:05d}-of-{n:05d}.safetensors", s) for i, s in enumerate(shards)]
  for fname, tensors in written:
    tmp = model_dir / (fname + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, model_dir / fname)
  if len(written) > 1:
    index = {"metadata": {"total_size": sum(a.nbytes for s in shards for a in s.values())},
             "weight_map": {n: f for f, s in written for n in s}}
    _write_text_atomic(model_dir / INDEX_FILE, json.dumps(index, indent=2))
    stale = model_dir / SINGLE_FILE
  else:
    stale = model_dir / INDEX_FILE
  if stale.exists():
    stale.unlink()
  _write_text_atomic(model_dir / "config.json", json.dumps(to_hf_dict(cfg, ids), indent=2))


def _write_text_atomic(path: Path, text: str) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)
