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
    # model.vocab_size follows the tokenizer; compare everything else.
    now = cfg.to_dict()
    now["model"]["vocab_size"] = saved.get("model", {}).get("vocab_size")
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


def truncate_metrics(path: Path, after_step: int) -> None:
  """Drops records of steps a resumed run will redo (written after the last checkpoint)."""
  if not path.exists():
    return
  keep = [line for line in path.read_text().splitlines()
          if line.strip() and json.loads(line)["step"] <= after_step]
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text("".join(line + "\n" for line in keep))
  tmp.replace(path)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
  path = Path(path)
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_inference_model(path: str | Path) -> tuple[Transformer, ModelConfig, SpecialIds, Any]:
  """(model, model config, special ids, tokenizer) from a workdir or HF model directory."""
  path = Path(path)
  if not path.is_dir():
    raise ValueError(f"model directory {path} does not exist")
  wd = Workdir(path)
  if wd.model.joinpath("config.json").exists():
    return load_inference_model(wd.model)
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
  model, model_cfg, ids = checkpoints.load_model(path)
  tokenizer = load_tokenizer(path)
  return model, model_cfg, tokenizer.special, tokenizer
