"""What one `mro eval` run evaluates: `EvalConfig`, and how its steps are written.

An `EvalConfig` names a task and a protocol (prompt style and sampler defaults per task,
mro/evaluation/protocols.py), the step counts to evaluate, and the three settings types:
sampler overrides (fields of `SamplerConfig` that replace the protocol's), a
`SearchConfig` (None = the plain sampler) and a `RewardConfig`, or instead of the search a
`CascadeConfig` (the verified cascade). `EvalConfig.build`
makes one from flat options the way the CLI does: unset options keep the protocol's
defaults, including its search and reward defaults when a search is asked for.

Steps are integers or fractions of the response length: `L` (= gen_length, one token
per step; also `full`), `L/2`, `L/4`, ... Bad input (task, protocol, steps, limit,
sampler fields) raises ValueError here, before anything is loaded or compiled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mro import options
from mro.evaluation.protocols import Protocol, get_protocol
from mro.method.settings import (SEARCHES, CascadeConfig, SearchConfig, cascade_config,
                                 search_config)
from mro.sampling.schedule import FAST, SamplerConfig, resolve_steps
from rewards.combine import RewardConfig
from rewards.tasks import SPLITS, get_task

# Sampler fields an eval may override (steps come from EvalConfig.steps).
SAMPLER_FIELDS = tuple(f.name for f in dataclasses.fields(SamplerConfig) if f.name != "steps")


def parse_steps(text: str) -> tuple[str, ...]:
  """"2,4,L/2" -> ("2", "4", "L/2") (checked against gen_length later)."""
  items = tuple(s.strip() for s in text.split(","))
  if not all(items):
    raise ValueError(f"steps must be a comma-separated list like 2,4,8 or L,L/2; got "
                     f"{text!r}")
  return items


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """One `mro eval` run.

  steps: the step counts to evaluate (() = the protocol's).
  sampler: SamplerConfig fields replacing the protocol's (gen_length, block_length,
    temperature, remasking, threshold, cfg_scale, ...).
  search: None = the plain sampler; else the MRO search or best-of-N.
  cascade: the verified cascade instead (search must then be None); its stages replace
    fields of each steps value's sampler.
  rewards: the search's rewards (None = the protocol's).
  scorer: the causal scorer of R_ppl: a model dir, `default` (the task's shipped one), or
    None = the shipped scorer when the model is a shipped one.
  limit: None = the protocol's number of items, else the task's default.
  seed seeds sampling; data_seed the examples of generated tasks.
  out: append one JSON line per setting (and every generation to <stem>.generations.jsonl);
    settings already recorded there with the same resolved config are skipped unless
    `force`.
  """

  task: str
  protocol: str = "compact"
  steps: tuple[int | str, ...] | str = ()
  sampler: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  search: SearchConfig | None = None
  rewards: RewardConfig | None = None
  cascade: CascadeConfig | None = None
  scorer: str | None = None
  data: str | None = None
  split: str = "test"
  limit: int | None = None
  batch_size: int = 16
  seed: int = 0
  data_seed: int = 0
  out: str | None = None
  force: bool = False

  def __post_init__(self):
    steps = parse_steps(self.steps) if isinstance(self.steps, str) else tuple(self.steps)
    object.__setattr__(self, "steps", steps)
    object.__setattr__(self, "sampler", dict(self.sampler))
    get_task(self.task)  # ValueError listing the known tasks
    get_protocol(self.protocol)  # ValueError listing the known protocols
    unknown = sorted(set(self.sampler) - set(SAMPLER_FIELDS))
    if unknown:
      raise ValueError(f"unknown sampler field(s) {unknown}; known: {list(SAMPLER_FIELDS)} "
                       "(steps are given as steps)")
    if self.split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
    if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 1):
      raise ValueError(f"limit must be a positive number of examples, got {self.limit}")
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be positive, got {self.batch_size}")
    if self.out is not None and Path(self.out).is_dir():
      raise ValueError(f"out={self.out} is a directory; give a .jsonl file path")
    if self.search is not None and self.cascade is not None:
      raise ValueError("give either a search or a cascade, not both")
    if self.search is not None:
      self.search.check_rewards(self.resolved_rewards())
    for scfg in self.sampler_configs():  # steps, lengths, temperature, ...: checked now
      if self.search is not None:
        self.search.resolve(scfg)
      if self.cascade is not None:
        self.cascade.resolve(scfg)

  @classmethod
  def build(cls, task: str, protocol: str = "compact", *, search: str = "none",
            fast: bool = False, **options_and_fields) -> EvalConfig:
    """An EvalConfig from flat options, as the CLI gives them: `search` is none, mro,
    best-of-n or cascade; sampler, search, reward and cascade options use their flag names
    (mro/options.py: gen_length, threshold, k, search_temperature, rewards, stages, ...);
    unset ones (absent or None) keep the protocol's defaults. `fast`: the recommended fast
    decoding (`mro.sampling.schedule.FAST`), under any sampler option given explicitly.
    Other keywords are EvalConfig fields."""
    if search not in ("none", *SEARCHES, "cascade"):
      raise ValueError(f"search must be none, mro, best-of-n or cascade, got {search!r}")
    given = {k: v for k, v in options_and_fields.items() if v is not None}
    rest = {k: v for k, v in given.items() if k not in options.DESTS}
    sampler = {**(dict(FAST) if fast else {}), **options.overrides(given, SamplerConfig)}
    search_fields = options.overrides(given, SearchConfig)
    reward_fields = options.overrides(given, RewardConfig)
    p = get_protocol(protocol, task)
    scfg = rewards = None
    cascade = cascade_config(search, options.overrides(given, CascadeConfig),
                             set(search_fields) | set(reward_fields))
    if search not in ("none", "cascade"):
      fields = {**dataclasses.asdict(p.search), **search_fields}
      if search == "best-of-n":
        del fields["select"]  # best-of-N never selects
      scfg = search_config(search, **fields)
      rewards = dataclasses.replace(p.rewards, **reward_fields)
    elif search_fields or reward_fields:
      names = sorted((set(given) & options.DESTS) - set(sampler))
      raise ValueError(f"search option(s) {names} need --search mro or best-of-n")
    return cls(task=task, protocol=protocol, sampler=sampler, search=scfg, rewards=rewards,
               cascade=cascade, **rest)

  def resolved_protocol(self) -> Protocol:
    """The protocol for this task with the explicit sampler options and limit applied."""
    p = get_protocol(self.protocol, self.task)
    overrides = {k: self.sampler[k] for k in ("gen_length", "block_length", "temperature",
                                              "remasking") if k in self.sampler}
    if self.limit is not None:
      overrides["limit"] = self.limit
    return dataclasses.replace(p, **overrides)

  def resolved_rewards(self) -> RewardConfig:
    return self.rewards if self.rewards is not None else \
        get_protocol(self.protocol, self.task).rewards

  def sampler_configs(self) -> tuple[SamplerConfig, ...]:
    """One SamplerConfig per steps value (SamplerConfig checks that each divides)."""
    p = self.resolved_protocol()
    items = self.steps or (p.steps_for(p.gen_length),)
    steps = [resolve_steps(s, p.gen_length) for s in items]
    if len(set(steps)) != len(steps):
      raise ValueError(f"steps {list(items)} name the same number of steps twice: {steps}")
    if self.sampler.get("threshold") is not None and len(steps) > 1:
      raise ValueError("with threshold set the number of steps adapts per row; give at most "
                       f"one steps value (got {list(items)})")
    base = p.sampler_config()
    extra = {k: v for k, v in self.sampler.items() if k not in ("gen_length", "block_length",
                                                                 "temperature", "remasking")}
    return tuple(dataclasses.replace(base, steps=s, **extra) for s in steps)
