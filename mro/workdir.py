"""The workdir is the record of a run.

    workdir/config.json      resolved experiment config (every field)
    workdir/tokenizer/       the tokenizer the run trained or was given
    workdir/checkpoints/N/   Orbax checkpoints: train state + {"data_position": ...}
    workdir/metrics.jsonl    one JSON object per logged step
    workdir/model/           the final model in portable HF format (+ tokenizer)

`load_inference_model` opens a workdir (its exported model, else its latest checkpoint)
or any HF-format model directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from flax import nnx

from models import checkpoints
from models.config import ModelConfig, SpecialIds
from models.tokenizers import load_tokenizer
from models.transformer import Transformer
from mro import config as exp_config


@dataclasses.dataclass(frozen=True)
class Workdir:
  root: Path

  @property
  def config(self) -> Path:
    return self.root / "config.json"

  @property
  def tokenizer(self) -> Path:
    return self.root / "tokenizer"

  @property
  def checkpoints(self) -> Path:
    return self.root / "checkpoints"

  @property
  def metrics(self) -> Path:
    return self.root / "metrics.jsonl"

  @property
  def model(self) -> Path:
    return self.root / "model"


# Settings that may change between a run and its resumption (they do not change results).
IGNORED_ON_RESUME = {"train": ("progress", "wandb", "wandb_project", "log_every",
                               "keep_checkpoints", "checkpoint_every"),
                     "data": ("loss_chunk",),  # the same loss, computed in chunks
                     "sampler": tuple(f.name for f in dataclasses.fields(exp_config.SamplerConfig))}


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
  out = []
  for k in sorted(set(a) | set(b)):
    va, vb = a.get(k), b.get(k)
    if isinstance(va, dict) and isinstance(vb, dict):
      out += _diff(va, vb, f"{prefix}{k}.")
    elif va != vb:
      out.append(f"{prefix}{k}: {va!r} (workdir) vs {vb!r} (now)")
  return out


def claim(root: str | Path, cfg: exp_config.ExperimentConfig) -> Workdir:
  """Creates the workdir, or checks that an existing one was started with this config."""
  wd = Workdir(Path(root))
  wd.root.mkdir(parents=True, exist_ok=True)
  if wd.config.exists():
    saved = json.loads(wd.config.read_text())
    now = cfg.to_dict()
    # A section added to the schema after the run started counts as its defaults.
    for section, values in exp_config.ExperimentConfig().to_dict().items():
      saved.setdefault(section, values)
    # model.vocab_size follows the tokenizer; the rest of IGNORED cannot change results.
    now["model"]["vocab_size"] = saved.get("model", {}).get("vocab_size")
    for section, keys in IGNORED_ON_RESUME.items():
      for key in keys:
        saved.get(section, {}).pop(key, None)
        now.get(section, {}).pop(key, None)
    differences = _diff(saved, now)
    if differences:
      raise ValueError(f"{wd.root} holds a run with a different config; use a new workdir or "
                       "the same settings. Differences:\n  " + "\n  ".join(differences))
  return wd


def append_metrics(path: Path, record: dict[str, Any]) -> None:
  with path.open("a") as f:
    f.write(json.dumps(record) + "\n")
    f.flush()
    os.fsync(f.fileno())


def _parse(line: str) -> dict[str, Any] | None:
  try:
    record = json.loads(line)
  except json.JSONDecodeError:  # a line torn by a kill
    return None
  return record if isinstance(record, dict) and "step" in record else None


def truncate_metrics(path: Path, after_step: int) -> None:
  """Drops records of steps a resumed run will redo (written after the last checkpoint)
  and any line torn by a kill."""
  if not path.exists():
    return
  keep = [line for line in path.read_text().splitlines()
          if (r := _parse(line)) is not None and r["step"] <= after_step]
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text("".join(line + "\n" for line in keep))
  tmp.replace(path)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
  path = Path(path)
  if not path.exists():
    return []
  return [r for line in path.read_text().splitlines() if (r := _parse(line)) is not None]


def load_inference_model(path: str | Path, mesh=None) -> tuple[Transformer, ModelConfig,
                                                               SpecialIds, Any]:
  """(model, model config, special ids, tokenizer) from a workdir or a model directory
  (HF safetensors, or Orbax from `mro convert`). `mesh` shards a model directory's
  weights as they are read (a workdir's checkpoint uses its config's mesh)."""
  path = Path(path)
  if not path.is_dir():
    raise ValueError(f"model directory {path} does not exist" if not path.exists() else
                     f"{path} is a file, not a workdir or model directory")
  wd = Workdir(path)
  if wd.model.joinpath("config.json").exists():
    return load_inference_model(wd.model, mesh)
  if wd.checkpoints.is_dir() and wd.config.exists():
    from mro.checkpointing import Checkpointer  # orbax is only needed for workdirs
    from mro.train import init_state, make_optimizer
    from models.sharding import make_mesh
    cfg = exp_config.load_resolved(wd.config)
    ckpt = Checkpointer(wd.checkpoints, cfg.train.keep_checkpoints)
    step = ckpt.latest_step()
    if step is None:
      raise ValueError(f"{wd.checkpoints} holds no checkpoint yet")
    mesh = make_mesh(cfg.mesh)
    apply, like, _ = init_state(cfg.model, make_optimizer(cfg.train), cfg.train.seed, mesh)
    state, _ = ckpt.restore(step, like)
    ckpt.close()
    tokenizer = load_tokenizer(wd.tokenizer)
    return nnx.merge(apply.graphdef, state.params), cfg.model, tokenizer.special, tokenizer
  if not path.joinpath("config.json").exists():
    raise ValueError(f"{path} is neither a workdir nor a model directory (no config.json)")
  tokenizer = load_tokenizer(path)
  model, model_cfg, ids = checkpoints.load_model(path, mesh=mesh)
  if ids.mask != tokenizer.special.mask or ids.eos != tokenizer.special.eos:
    raise ValueError(f"{path}: config.json names mask/eos ids {ids.mask}/{ids.eos} but the "
                     f"tokenizer has {tokenizer.special.mask}/{tokenizer.special.eos}")
  return model, model_cfg, tokenizer.special, tokenizer


def recorded_sampler_config(path: str | Path) -> exp_config.SamplerConfig | None:
  """The sampler settings a workdir's config records (None for a bare model dir)."""
  wd = Workdir(Path(path))
  if not wd.config.exists():
    wd = Workdir(Path(path).parent)  # workdir/model -> workdir
  if not wd.config.exists():
    return None
  try:
    return exp_config.load_resolved(wd.config).sampler
  except (ValueError, KeyError, TypeError):
    return None
