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

from models import config as model_config
from models.config import ModelConfig
from models.sharding import MeshConfig
from mro import paths
from mro.files import load_yaml, write_json_atomic
from mro.method.finetuning.grpo_settings import CoupledGRPOConfig, DiffuGRPOConfig, WD1Config
from mro.method.finetuning.settings import RejectConfig, RLConfig, StartConfig, ValidationConfig
from mro.messages import quoted
from mro.method.search.settings import SearchConfig
from mro.sampling.schedule import SamplerConfig
from mro.training.settings import DataConfig, TokenizerConfig, TrainConfig
from rewards.combine import RewardConfig

CONFIG_DIR = paths.CONFIGS


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  model: ModelConfig = ModelConfig()
  tokenizer: TokenizerConfig = TokenizerConfig()
  data: DataConfig = DataConfig()
  train: TrainConfig = TrainConfig()
  sampler: SamplerConfig = SamplerConfig()
  mesh: MeshConfig = MeshConfig()
  # reject sampling and RL (mro/method/search/settings.py, mro/method/finetuning/,
  # rewards/combine.py)
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
    validate(self)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


_SECTION_TYPES = typing.get_type_hints(ExperimentConfig)
COMMANDS = ("train", "reject-sample", "rl")  # the verbs that run an experiment config


def validate(cfg: ExperimentConfig, command: str | None = None) -> ExperimentConfig:
  """Every check that spans sections, as a ValueError naming the fields: the model and the
  data always (every config is checked as it is made), and what a run of `command`
  (train, reject-sample, rl) needs of the others. It runs when a config is loaded for a
  command, in `mro sweep`'s check of every run before any starts, and as a run starts, so
  a config that a run would refuse is refused before anything is compiled."""
  if command not in (None, *COMMANDS):
    raise ValueError(f"command must be one of {COMMANDS}, got {quoted(command)}")
  if (cfg.data.objective == "ar") != cfg.model.causal:
    raise ValueError(f"data.objective={quoted(cfg.data.objective)} with model.causal="
                     f"{cfg.model.causal}: the 'ar' objective is for causal models only, "
                     "and a causal model can only be trained with it")
  needed = cfg.data.max_prompt_len + cfg.data.max_response_len
  if needed > cfg.model.max_seq_len:
    raise ValueError(f"data.max_prompt_len + data.max_response_len = {needed} exceeds "
                     f"model.max_seq_len={cfg.model.max_seq_len}")
  if command == "reject-sample":
    _check_reject(cfg)
  elif command == "rl":
    _check_rl(cfg)
  return cfg


def _check_reject(cfg: ExperimentConfig) -> None:
  """Reject sampling: a sampler the search can run, and a keep rule its rewards feed."""
  cfg.sampler.refuse_correction("reject sampling (sampler section)")
  try:
    cfg.search.check(cfg.sampler)
  except ValueError as e:
    raise ValueError(f"search section with the sampler section: {e}") from None
  cfg.search.check_rewards(cfg.rewards)
  if cfg.reject.keep == "quality" and not cfg.rewards.on("q"):
    raise ValueError("reject.keep=quality filters on R_q, but rewards.use "
                     f"{','.join(cfg.rewards.use) or 'none'} leaves q off")


def _check_rl(cfg: ExperimentConfig) -> None:
  """RL: batches of whole rollouts, checkpoints on rollout boundaries, groups that divide
  the sampler's steps (MRO-RL, and the GRPO family with R_tv / R_ppl), a reward."""
  m, t = cfg.rl, cfg.train
  cfg.sampler.refuse_correction("RL (sampler section)")
  if t.batch_size != m.prompts_per_batch * m.rollouts_per_prompt:
    raise ValueError(f"train.batch_size={t.batch_size} must equal rl.prompts_per_batch x "
                     f"rl.rollouts_per_prompt = {m.prompts_per_batch * m.rollouts_per_prompt}")
  for name in ("steps", "checkpoint_every"):
    if getattr(t, name) % m.inner_steps:
      raise ValueError(f"train.{name}={getattr(t, name)} must be a multiple of "
                       f"rl.inner_steps={m.inner_steps} (checkpoints on rollout boundaries)")
  # a group is rl.group_steps of the loop's steps; an adaptive rule (threshold or factor,
  # kept to the steps or not) counts commit steps per row, which groups cannot follow
  fixed = cfg.sampler.steps % m.group_steps == 0 and not cfg.sampler.adaptive
  if m.method == "mro" and not fixed:
    raise ValueError(f"sampler.steps={cfg.sampler.steps} must be a multiple of "
                     f"rl.group_steps={m.group_steps}, with a fixed schedule (no threshold "
                     "or factor)")
  if m.method != "mro" and (cfg.rewards.on("tv") or cfg.rewards.on("ppl")) and not fixed:
    raise ValueError(f"R_tv / R_ppl are measured per group: sampler.steps="
                     f"{cfg.sampler.steps} must be a multiple of rl.group_steps="
                     f"{m.group_steps}, with a fixed schedule (no threshold or factor); or "
                     "use rewards.use=q")
  if m.method != "mro" and not cfg.rewards.use:
    raise ValueError("rewards.use is empty: a GRPO-family run needs a reward")


def _check_type(where: str, value: Any, annotation: Any) -> Any:
  """Value coerced to the field's declared type, or a ValueError naming the field."""
  if isinstance(value, float) and not math.isfinite(value):
    raise ValueError(f"{where} must be a finite number, got {quoted(value)}")
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
        raise ValueError(f"{where} must be a finite number, got {quoted(value)}")
      return number
    if t is str and isinstance(value, str):
      return value
  names = " or ".join(getattr(t, "__name__", str(t)) for t in options)
  raise ValueError(f"{where} must be {names}, got {quoted(value)}")


def _build_section(name: str, values: dict[str, Any]):
  cls = _SECTION_TYPES[name]
  values = dict(values)
  base = getattr(ExperimentConfig(), name)  # the section's defaults in an experiment
  if name == "model" and "preset" in values:
    preset_name = values.pop("preset")
    if not isinstance(preset_name, str):
      raise ValueError(f"model.preset must be a preset name, got {quoted(preset_name)}")
    base = model_config.preset(preset_name)
  fields = typing.get_type_hints(cls)
  unknown = sorted(set(values) - set(fields), key=str)  # YAML keys may be numbers
  if unknown:
    raise ValueError(f"unknown config key(s) {quoted([f'{name}.{k}' for k in unknown])}; "
                     f"known keys of {quoted(name)}: {sorted(fields)}")
  typed = {k: _check_type(f"{name}.{k}", v, fields[k]) for k, v in values.items()}
  return dataclasses.replace(base, **typed)


def from_dict(raw: dict[str, Any]) -> ExperimentConfig:
  if not isinstance(raw, dict):
    raise ValueError(f"a config must be a mapping of sections, got {type(raw).__name__}")
  unknown = sorted(set(raw) - set(_SECTION_TYPES), key=str)
  if unknown:
    raise ValueError(f"unknown config section(s) {quoted(unknown)}; known: "
                     f"{sorted(_SECTION_TYPES)}")
  sections = {}
  for name, values in raw.items():
    if not isinstance(values, dict):
      raise ValueError(f"config section {quoted(name)} must be a mapping, got {quoted(values)}")
    sections[name] = _build_section(name, values)
  return ExperimentConfig(**sections)


def apply_sets(raw: dict[str, Any], sets: list[str]) -> dict[str, Any]:
  """Applies `section.key=value` overrides (values parsed as YAML scalars)."""
  if not isinstance(raw, dict):
    raise ValueError(f"a config must be a mapping of sections, got {type(raw).__name__}")
  for name, values in raw.items():
    if values is not None and not isinstance(values, dict):
      raise ValueError(f"config section {quoted(name)} must be a mapping, got {quoted(values)}")
  raw = {k: dict(v or {}) for k, v in raw.items()}
  for item in sets:
    key, sep, text = item.partition("=")
    section, dot, field = key.strip().partition(".")
    if not sep or not dot or not field:
      raise ValueError(f"--set expects section.key=value, got {quoted(item)}")
    value = load_yaml(text, f"--set {quoted(item)}") if text.strip() else None
    raw.setdefault(section, {})[field] = value
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
    raise ValueError(f"unknown config {quoted(name_or_path)}; shipped configs: {known}, "
                     "or give a path to a .yaml file")
  return shipped


def load_config(name_or_path: str, sets: list[str] = (),
                command: str | None = None) -> ExperimentConfig:
  """A config file with `sets` applied, checked whole for a run of `command` (`validate`)."""
  path = resolve_path(name_or_path)
  raw = load_yaml(path.read_text(), str(path)) or {}
  return validate(from_dict(apply_sets(raw, list(sets))), command)


def save_resolved(cfg: ExperimentConfig, path: Path) -> None:
  write_json_atomic(path, cfg.to_dict())


def load_resolved(path: Path) -> ExperimentConfig:
  return from_dict(json.loads(Path(path).read_text()))
