"""Model weights as an Orbax checkpoint: sharded writes, fast restores onto any mesh.

An Orbax model directory (written by `mro convert`) is a HF model directory with the
safetensors replaced by `orbax/`:

    config.json       the LLaDA config (as in the HF directory; ids and shapes)
    tokenizer files   copied unchanged
    orbax/            the weights, in this network's layout ([in, out] kernels), one
                      array per weight, keyed by their path in the nnx state

Restoring reads each device's shard directly (tensorstore) in the target sharding, with
no transposes; every process of a multi-host run reads only its own shards. Orbax
writes into a temporary directory renamed when complete, so an interrupted save never
leaves a directory that restores.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from models.config import ModelConfig
from models.sharding import tree_shardings
from models.transformer import abstract_model

ORBAX_DIR = "orbax"


def is_orbax_model(model_dir: str | Path) -> bool:
  return (Path(model_dir) / ORBAX_DIR).is_dir()


def _nested(state) -> dict:
  """nnx state -> nested dict with string keys (what Orbax stores)."""
  out: dict = {}
  for path, var in nnx.to_flat_state(state):
    node = out
    for p in path[:-1]:
      node = node.setdefault(str(p), {})
    node[str(path[-1])] = var.get_value()
  return out


def _flat(tree, prefix: tuple = ()) -> dict[str, object]:
  if isinstance(tree, dict):
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, prefix + (key,)).items()}
  return {".".join(prefix): tree}


def save_state(model_dir: str | Path, state) -> None:
  """Writes the weights as `model_dir/orbax/` (every process calls this; Orbax coordinates
  them). config.json and tokenizer files are the caller's (see models/convert.py)."""
  target = Path(model_dir).absolute() / ORBAX_DIR
  if target.exists():
    raise ValueError(f"{target} already exists; choose a new output directory")
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(target, _nested(state))
    ckpt.wait_until_finished()


def _check_against_config(model_dir: Path, saved: dict, expected: dict) -> None:
  problems = [f"missing weight {n} (expected shape {expected[n].shape})"
              for n in sorted(set(expected) - set(saved))]
  problems += [f"unexpected weight {n} with shape {tuple(saved[n].shape)}"
               for n in sorted(set(saved) - set(expected))]
  problems += [f"weight {n} has shape {tuple(saved[n].shape)}, expected {expected[n].shape}"
               for n in sorted(set(saved) & set(expected))
               if tuple(saved[n].shape) != tuple(expected[n].shape)]
  if problems:
    raise ValueError(f"{model_dir / ORBAX_DIR} does not match config.json:\n  "
                     + "\n  ".join(problems))


def load_state(model_dir: str | Path, cfg: ModelConfig, *, mesh: jax.sharding.Mesh | None = None):
  """(graphdef, nnx state) restored onto `mesh` (default: the first device), strictly:
  every missing, unexpected or mis-shaped weight is reported before anything is read."""
  model_dir = Path(model_dir).absolute()
  graphdef, abstract = abstract_model(cfg)
  is_var = lambda x: isinstance(x, nnx.Variable)
  if mesh is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shardings = jax.tree.map(lambda _: sharding, abstract, is_leaf=is_var)
  else:
    shardings = tree_shardings(abstract, mesh)
  target_state = jax.tree.map(
      lambda v, s: v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s)),
      abstract, shardings, is_leaf=is_var)
  target = _nested(target_state)
  with ocp.StandardCheckpointer() as ckpt:
    meta = ckpt.metadata(model_dir / ORBAX_DIR).item_metadata
    if meta is None:
      raise ValueError(f"{model_dir / ORBAX_DIR} is not a readable Orbax checkpoint")
    _check_against_config(model_dir, _flat(dict(meta)), _flat(target))
    restored = _flat(ckpt.restore(model_dir / ORBAX_DIR, target))
  state = nnx.from_flat_state([
      (path, var.replace(restored[".".join(map(str, path))]))
      for path, var in nnx.to_flat_state(target_state)])
  return graphdef, state


def saved_dtypes(model_dir: str | Path) -> set[np.dtype]:
  """The dtypes stored in an Orbax model directory (without reading the arrays)."""
  with ocp.StandardCheckpointer() as ckpt:
    meta = ckpt.metadata(Path(model_dir).absolute() / ORBAX_DIR).item_metadata
  return {np.dtype(m.dtype) for m in _flat(dict(meta)).values()}
