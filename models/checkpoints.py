"""Hugging Face checkpoints (LLaDA, Dream, LLaDA-MoE): strict, tensor-by-tensor I/O.

A model directory holds `config.json` and either `model.safetensors` or sharded files
listed in `model.safetensors.index.json`. Reading is strict: every missing, unexpected
or mis-shaped weight is reported (all of them, with names and shapes) before anything is
read. Tensors are read one at a time, each device's piece straight from a memory map of
the file onto its target sharding, so peak host memory stays near the largest single
tensor (measured in tests/test_convert.py; docs/results.md, "Scale"). Writing streams
tensors one at a time too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from models import orbax_io
from models import safetensors_io as st
from models.config import ModelConfig, SpecialIds
from models.hf_config import load_hf_config, to_hf_dict
from models.hf_names import Slot, hf_name_map
from models.sharding import host_array, tree_shardings
from models.transformer import Transformer, abstract_model

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
__all__ = ["hf_name_map", "load_hf_state", "load_model", "save_hf", "write_hf"]


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
    return {name: single for name in st.read_header(single)}
  raise ValueError(f"{model_dir} has neither {SINGLE_FILE} nor {INDEX_FILE}")


def tensor_infos(model_dir: str | Path) -> dict[str, st.TensorInfo]:
  """Tensor name -> where its bytes are (file, dtype, shape); reads headers only."""
  files = weight_files(model_dir)
  headers = {f: st.read_header(f) for f in sorted(set(files.values()))}
  infos = {}
  for name, f in files.items():
    if name not in headers[f]:
      raise ValueError(f"{model_dir / INDEX_FILE} puts {name} in {f.name}, which lacks it")
    infos[name] = headers[f][name]
  return infos


def check_names_and_shapes(cfg: ModelConfig, shapes: dict[str, tuple[int, ...]]) -> None:
  """Raises one ValueError listing every missing, unexpected and mis-shaped tensor."""
  _, abstract = abstract_model(cfg)
  expected = {}
  for name, slot in hf_name_map(cfg).items():
    shape = tuple(_get(abstract, slot.path).shape)[slot.expert is not None:]
    expected[name] = shape[::-1] if slot.transpose else shape
  problems = [f"missing weight {n} (expected shape {expected[n]})"
              for n in sorted(set(expected) - set(shapes))]
  problems += [f"unexpected weight {n} with shape {shapes[n]}"
               for n in sorted(set(shapes) - set(expected))]
  problems += [f"weight {n} has shape {shapes[n]}, expected {expected[n]}"
               for n in sorted(set(shapes) & set(expected)) if shapes[n] != expected[n]]
  if problems:
    raise ValueError("checkpoint does not match the model config:\n  " + "\n  ".join(problems))


def read_sharded(info: st.TensorInfo, sharding: jax.sharding.Sharding, dtype,
                 transpose: bool = False) -> jax.Array:
  """One tensor placed straight onto `sharding`: each device's piece is copied out of the
  file (only its bytes), converted and, for torch [out, in] weights, transposed on the
  host. Pieces shared by several devices are read once, so the host holds at most one
  tensor's worth of pieces at a time; with several processes each reads only the pieces
  of its own devices."""
  pieces: dict[tuple, np.ndarray] = {}

  def piece(index: tuple) -> np.ndarray:
    key = tuple((s.start, s.stop, s.step) for s in index)
    if key not in pieces:
      pieces[key] = info.read(index, dtype, transpose)
    return pieces[key]

  shape = info.shape[::-1] if transpose else info.shape
  out = jax.make_array_from_callback(shape, sharding, piece)
  pieces.clear()
  return out


def read_stacked(infos: list[st.TensorInfo], sharding: jax.sharding.Sharding, dtype,
                 transpose: bool = False) -> jax.Array:
  """One stacked weight [len(infos), ...] (an MoE layer's experts, one tensor each in the
  file) placed straight onto `sharding`: each device's piece is read from the experts it
  holds (only its slice of each), so the host holds one device's piece at a time."""
  first = infos[0].shape[::-1] if transpose else infos[0].shape
  shape = (len(infos),) + tuple(first)

  def piece(index: tuple) -> np.ndarray:
    experts = range(*index[0].indices(len(infos)))
    return np.stack([infos[e].read(index[1:], dtype, transpose) for e in experts])

  return jax.make_array_from_callback(shape, sharding, piece)


def load_hf_state(model_dir: str | Path, cfg: ModelConfig,
                  sharding_of: Callable[[tuple], jax.sharding.Sharding] | None = None, *,
                  mesh: jax.sharding.Mesh | None = None):
  """Reads a HF checkpoint of `cfg`'s family into an nnx state (graphdef, state).

  Every name and shape is checked against `cfg` first (one error lists all problems).
  With `mesh`, each weight lands on its logical-axis sharding (models/sharding.py); with
  `sharding_of(path)`, on the sharding it returns; with neither, on the default device.
  Tensors are read one at a time (see `read_sharded` for the host-memory bound).
  """
  infos = tensor_infos(model_dir)
  check_names_and_shapes(cfg, {name: info.shape for name, info in infos.items()})
  graphdef, state = abstract_model(cfg)
  if mesh is not None:
    shardings = tree_shardings(state, mesh)
    sharding_of = lambda path: _get(shardings, path)
  if sharding_of is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    sharding_of = lambda path: device
  dtype = np.dtype(cfg.jnp_param_dtype)
  for path, names, slot in _by_weight(hf_name_map(cfg), infos):
    if slot.expert is None:
      value = read_sharded(infos[names[0]], sharding_of(path), dtype, slot.transpose)
    else:
      value = read_stacked([infos[n] for n in names], sharding_of(path), dtype, slot.transpose)
    _get(state, path[:-1])[path[-1]] = nnx.Param(value, **_get(state, path).get_metadata())
  return graphdef, state


def _by_weight(mapping: dict[str, Slot], infos: dict[str, st.TensorInfo]):
  """(path, HF names in expert order, a slot) per weight of our state, in file order of
  their first tensor (reads then sweep each file forward)."""
  groups: dict[tuple, list[str]] = {}
  for name, slot in mapping.items():
    groups.setdefault(slot.path, []).append(name)
  order = lambda n: (str(infos[n].path), infos[n].offset)
  out = []
  for path, names in groups.items():
    names.sort(key=lambda n: mapping[n].expert or 0)
    out.append((path, names, mapping[names[0]]))
  return sorted(out, key=lambda item: order(item[1][0]))


def load_model(model_dir: str | Path, *, mesh: jax.sharding.Mesh | None = None,
               **config_overrides) -> tuple[Transformer, ModelConfig, SpecialIds]:
  """A ready model from a model directory: config.json + HF safetensors, or + an Orbax
  copy made by `mro convert` (models/orbax_io.py). `mesh` shards it as it is read."""
  cfg, ids = load_hf_config(model_dir, **config_overrides)
  if orbax_io.is_orbax_model(model_dir):
    graphdef, state = orbax_io.load_state(model_dir, cfg, mesh=mesh)
  else:
    graphdef, state = load_hf_state(model_dir, cfg, mesh=mesh)
  return nnx.merge(graphdef, state), cfg, ids


def _plan_shards(names: list[str], sizes: dict[str, int], max_shard_bytes: int | None):
  shards: list[list[str]] = [[]]
  size = 0
  for name in names:
    if max_shard_bytes and shards[-1] and size + sizes[name] > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += sizes[name]
  if len(shards) == 1:
    return [(SINGLE_FILE, shards[0])]
  n = len(shards)
  return [(f"model-{i + 1:05d}-of-{n:05d}.safetensors", s) for i, s in enumerate(shards)]


def save_hf(model_dir: str | Path, state, cfg: ModelConfig, ids: SpecialIds,
            max_shard_bytes: int | None = None) -> None:
  """Writes config.json + safetensors (sharded with an index above `max_shard_bytes`) in
  the format of `cfg.family`.

  Tensors are fetched and written one at a time (host memory: about one tensor), from
  arrays on any mesh; with several processes all must call this and process 0 writes.
  Files are written to temporary names and renamed, so a crash leaves either the old
  checkpoint or the new one, never a torn file.
  """
  mapping = hf_name_map(cfg)
  value = lambda name: _get(state, mapping[name].path)[...]
  specs = {}
  for name, slot in mapping.items():
    v = value(name)
    shape = tuple(v.shape)[slot.expert is not None:]
    specs[name] = (shape[::-1] if slot.transpose else shape, np.dtype(v.dtype))
  stacked: dict[tuple, np.ndarray] = {}  # the stacked expert weight being written

  def fetch(name):
    slot = mapping[name]
    if slot.expert is None:
      array = host_array(value(name))
    else:  # one gather per stacked weight, not per expert
      if slot.path not in stacked:
        stacked.clear()
        stacked[slot.path] = host_array(value(name))
      array = stacked[slot.path][slot.expert]
    return np.ascontiguousarray(array.T) if slot.transpose else array

  write_hf(model_dir, cfg, ids, specs, fetch, max_shard_bytes)


def write_hf(model_dir: str | Path, cfg: ModelConfig, ids: SpecialIds,
             specs: dict[str, tuple[tuple[int, ...], np.dtype]], fetch: Callable,
             max_shard_bytes: int | None = None) -> None:
  """The file writing of `save_hf`, from tensor specs (HF name -> (shape, dtype), in file
  order) and `fetch(name) -> np.ndarray` called once per tensor as it is written (so a
  caller can make tensors on the fly: experiments/bench/real_width.py)."""
  model_dir = Path(model_dir)
  writer = jax.process_index() == 0
  if writer:
    model_dir.mkdir(parents=True, exist_ok=True)
  sizes = {n: int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize
           for n, (s, d) in specs.items()}
  written = _plan_shards(list(specs), sizes, max_shard_bytes)
  for fname, names in written:
    if writer:
      st.write_file(model_dir / fname, [(n, *specs[n]) for n in names], fetch)
    else:  # take part in the gathers that the writer's fetches run
      for n in names:
        fetch(n)
  if writer:
    if len(written) > 1:
      index = {"metadata": {"total_size": sum(sizes.values())},
               "weight_map": {n: f for f, names in written for n in names}}
      _write_text_atomic(model_dir / INDEX_FILE, json.dumps(index, indent=2))
      stale = model_dir / SINGLE_FILE
    else:
      stale = model_dir / INDEX_FILE
    if stale.exists():
      stale.unlink()
    _write_text_atomic(model_dir / "config.json", json.dumps(to_hf_dict(cfg, ids), indent=2))
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("save_hf")  # no path: it may differ by host


def _write_text_atomic(path: Path, text: str) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)
