"""Experiment configuration: typed frozen sections, YAML files, `--set a.b=value` overrides.

A config file (experiments/configs/NAME.yaml, or any path) has one mapping per section:

    model: {preset: tiny, d_model: 96}   # a models/config.py preset plus overrides
    tokenizer: {vocab_size: 512}
    data: {task: arith, train_size: 20000}
    train: {steps: 300, batch_size: 32}
    sampler: {gen_length: 64, steps: 64, block_length: 32}
    mesh: {data: 1, fsdp: 1, tensor: 1}
    # reject sampling / RL only:
    start: {model: default, scorer: default}
    search: {k: 4, group_steps: 3, temperature: 1.0}
    rewards: {use: "tv,ppl,q", quality_source: label}
    reject: {keep: top1, n_opt: 2}
    rl: {method: mro, group_steps: 3, rollouts_per_prompt: 4, baseline: none}
    diffu_grpo: {p_mask_prompt: 0.15}    # rl.method diffu_grpo / coupled_grpo / wd1 only
    coupled_grpo: {estimator: pair}
    wd1: {psi: 1.0}
    validation: {every: 25, limit: 256}

Every key is checked against the dataclass fields (unknown keys are errors naming the
known ones), values against the field types, and each section validates itself, so a bad
config fails here, before anything is compiled. The resolved config (every field, no
preset) is what a workdir records, and it loads back to an equal config.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from models import config as model_config
from models.config import ModelConfig
from models.sharding import MeshConfig
from mro.method.settings import (CoupledGRPOConfig, DiffuGRPOConfig, RejectConfig, RLConfig,
                                 SearchConfig, StartConfig, ValidationConfig, WD1Config)
from mro.sampling.schedule import SamplerConfig
from rewards.combine import RewardConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "experiments" / "configs"


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
  """`path`: an existing tokenizer (a model dir); else sentencepiece is trained on the
  training split with `vocab_size` pieces (the model's vocab_size follows the tokenizer)."""

  path: str | None = None
  vocab_size: int = 512
  byte_fallback: bool = False  # 256 byte pieces so any text round-trips (costs 256 ids)

  def __post_init__(self):
    if self.vocab_size < 16:
      raise ValueError(f"tokenizer.vocab_size must be >= 16, got {self.vocab_size}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where training sequences come from and how they are laid out.

  Each example becomes [left-padded prompt (max_prompt_len)] + [response, EOS padding
  (max_response_len)]. Examples that do not fit are an error unless `truncate` is set.
  """

  task: str = "arith"  # a task registered in rewards/tasks
  path: str | None = None  # data file for the task (default: the task's own source)
  style: str = "compact"  # prompt style of the task ("compact" or "protocol")
  train_size: int = 0  # examples for generated tasks (0 = the task's default)
  max_prompt_len: int = 32
  max_response_len: int = 64
  objective: str = "sft"  # "sft" (prompt never masked), "pretrain", or "ar" (causal scorer)
  train_on_padding_eos: bool = True  # LLaDA trains on the EOS padding of the response
  mask_eps: float = 1e-3
  seed: int = 0
  # > 0: the loss runs the output layer only on chunks of this many positions per row
  # that hold masked tokens (mro/losses.chunked_masked_ce); same loss, less memory.
  loss_chunk: int = 0

  def __post_init__(self):
    if self.objective not in ("sft", "pretrain", "ar"):
      raise ValueError(f"data.objective must be 'sft', 'pretrain' or 'ar', got "
                       f"{self.objective!r}")
    for name in ("max_prompt_len", "max_response_len"):
      if getattr(self, name) <= 0:
        raise ValueError(f"data.{name} must be positive, got {getattr(self, name)}")
    if self.train_size < 0:
      raise ValueError(f"data.train_size must be >= 0, got {self.train_size}")
    if not 0.0 < self.mask_eps < 1.0:
      raise ValueError(f"data.mask_eps must be in (0, 1), got {self.mask_eps}")
    if self.loss_chunk < 0:
      raise ValueError(f"data.loss_chunk must be >= 0 (0 = off), got {self.loss_chunk}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int = 200
  batch_size: int = 32  # sequences per optimizer step (all micro-batches together)
  grad_accum: int = 1  # micro-batches per step; batch_size must divide evenly
  lr: float = 3e-4
  # linear warmup, capped at a tenth of the run (`effective_warmup`), so a short run of a
  # long config (--set train.steps=20) just works
  warmup_steps: int = 20
  min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
  weight_decay: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  grad_clip: float = 1.0
  seed: int = 0
  checkpoint_every: int = 100
  keep_checkpoints: int = 3
  log_every: int = 10
  wandb: bool = False
  wandb_project: str = "mro"
  progress: bool = True

  def __post_init__(self):
    for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints",
                 "log_every"):
      if getattr(self, name) <= 0:
        raise ValueError(f"train.{name} must be positive, got {getattr(self, name)}")
    if self.batch_size % self.grad_accum:
      raise ValueError(f"train.batch_size={self.batch_size} is not divisible by "
                       f"train.grad_accum={self.grad_accum}")
    if self.lr <= 0 or self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
      raise ValueError("train.lr must be > 0, train.warmup_steps >= 0 and "
                       "train.min_lr_ratio in [0, 1]")
    if self.grad_clip <= 0:
      raise ValueError(f"train.grad_clip must be positive, got {self.grad_clip}")
    for name in ("b1", "b2"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"train.{name} must be in [0, 1), got {getattr(self, name)}")
    if self.weight_decay < 0:
      raise ValueError(f"train.weight_decay must be >= 0, got {self.weight_decay}")

  @property
  def effective_warmup(self) -> int:
    """The warmup steps used: warmup_steps, at most a tenth of the run (at least 1)."""
    return min(self.warmup_steps, max(1, self.steps // 10))


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  model: ModelConfig = ModelConfig()
  tokenizer: TokenizerConfig = TokenizerConfig()
  data: DataConfig = DataConfig()
  train: TrainConfig = TrainConfig()
  sampler: SamplerConfig = SamplerConfig()
  mesh: MeshConfig = MeshConfig()
  # reject sampling and RL (mro/method/settings.py, rewards/combine.py)
  start: StartConfig = StartConfig()
  search: SearchConfig = SearchConfig()
  rewards: RewardConfig = RewardConfig(quality_source="label")
  reject: RejectConfig = RejectConfig()
  rl: RLConfig = RLConfig()
  diffu_grpo: DiffuGRPOConfig = DiffuGRPOConfig()  # the GRPO family (rl.method)
  coupled_grpo: CoupledGRPOConfig = CoupledGRPOConfig()
  wd1: WD1Config = WD1Config()
  validation: ValidationConfig = ValidationConfig()

  def __post_init__(self):
    if (self.data.objective == "ar") != self.model.causal:
      raise ValueError(f"data.objective={self.data.objective!r} with model.causal="
                       f"{self.model.causal}: the 'ar' objective is for causal models only, "
                       "and a causal model can only be trained with it")
    needed = self.data.max_prompt_len + self.data.max_response_len
    if needed > self.model.max_seq_len:
      raise ValueError(f"data.max_prompt_len + data.max_response_len = {needed} exceeds "
                       f"model.max_seq_len={self.model.max_seq_len}")

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


_SECTION_TYPES = typing.get_type_hints(ExperimentConfig)


def _check_type(where: str, value: Any, annotation: Any) -> Any:
  """Value coerced to the field's declared type, or a ValueError naming the field."""
  if isinstance(value, float) and not math.isfinite(value):
    raise ValueError(f"{where} must be a finite number, got {value!r}")
  options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) \
      else (annotation,)
  if value is None and type(None) in options:
    return None
  for t in options:
    if typing.get_origin(t) is tuple and isinstance(value, (list, tuple)):
      item = (typing.get_args(t) or (str,))[0]  # tuple[str, ...], tuple[int, ...]
      if all(isinstance(v, item) and not isinstance(v, bool) for v in value):
        return tuple(value)
    if t is bool and isinstance(value, bool):
      return value
    if t is int and isinstance(value, int) and not isinstance(value, bool):
      return value
    if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    if t is float and isinstance(value, str):  # YAML reads "1e-3" as a string
      try:
        number = float(value)
      except ValueError:
        continue
      if not math.isfinite(number):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
      return number
    if t is str and isinstance(value, str):
      return value
  names = " or ".join(getattr(t, "__name__", str(t)) for t in options)
  raise ValueError(f"{where} must be {names}, got {value!r}")


def _build_section(name: str, values: dict[str, Any]):
  cls = _SECTION_TYPES[name]
  values = dict(values)
  base = getattr(ExperimentConfig(), name)  # the section's defaults in an experiment
  if name == "model" and "preset" in values:
    preset_name = values.pop("preset")
    if not isinstance(preset_name, str):
      raise ValueError(f"model.preset must be a preset name, got {preset_name!r}")
    base = model_config.preset(preset_name)
  fields = typing.get_type_hints(cls)
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ValueError(f"unknown config key(s) {[f'{name}.{k}' for k in unknown]}; "
                     f"known keys of {name!r}: {sorted(fields)}")
  typed = {k: _check_type(f"{name}.{k}", v, fields[k]) for k, v in values.items()}
  return dataclasses.replace(base, **typed)


def from_dict(raw: dict[str, Any]) -> ExperimentConfig:
  if not isinstance(raw, dict):
    raise ValueError(f"a config must be a mapping of sections, got {type(raw).__name__}")
  unknown = sorted(set(raw) - set(_SECTION_TYPES))
  if unknown:
    raise ValueError(f"unknown config section(s) {unknown}; known: {sorted(_SECTION_TYPES)}")
  sections = {}
  for name, values in raw.items():
    if not isinstance(values, dict):
      raise ValueError(f"config section {name!r} must be a mapping, got {values!r}")
    sections[name] = _build_section(name, values)
  return ExperimentConfig(**sections)


def apply_sets(raw: dict[str, Any], sets: list[str]) -> dict[str, Any]:
  """Applies `section.key=value` overrides (values parsed as YAML scalars)."""
  if not isinstance(raw, dict):
    raise ValueError(f"a config must be a mapping of sections, got {type(raw).__name__}")
  for name, values in raw.items():
    if values is not None and not isinstance(values, dict):
      raise ValueError(f"config section {name!r} must be a mapping, got {values!r}")
  raw = {k: dict(v or {}) for k, v in raw.items()}
  for item in sets:
    key, sep, text = item.partition("=")
    section, dot, field = key.strip().partition(".")
    if not sep or not dot or not field:
      raise ValueError(f"--set expects section.key=value, got {item!r}")
    raw.setdefault(section, {})[field] = yaml.safe_load(text) if text.strip() else None
  return raw


def resolve_path(name_or_path: str) -> Path:
  path = Path(name_or_path)
  if path.suffix in (".yaml", ".yml", ".json") or path.exists():
    if not path.is_file():
      raise ValueError(f"config file {path} does not exist")
    return path
  shipped = CONFIG_DIR / f"{name_or_path}.yaml"
  if not shipped.is_file():
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise ValueError(f"unknown config {name_or_path!r}; shipped configs: {known}, "
                     "or give a path to a .yaml file")
  return shipped


def load_config(name_or_path: str, sets: list[str] = ()) -> ExperimentConfig:
  path = resolve_path(name_or_path)
  try:
    raw = yaml.safe_load(path.read_text()) or {}
  except yaml.YAMLError as e:
    raise ValueError(f"{path} is not valid YAML: {e}") from e
  return from_dict(apply_sets(raw, list(sets)))


def save_resolved(cfg: ExperimentConfig, path: Path) -> None:
  from mro.files import write_json_atomic
  write_json_atomic(path, cfg.to_dict())


def load_resolved(path: Path) -> ExperimentConfig:
  return from_dict(json.loads(Path(path).read_text()))
