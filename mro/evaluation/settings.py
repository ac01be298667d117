"""What one `mro eval` run evaluates: `EvalConfig`, and how its steps are written.

An `EvalConfig` names a task and a protocol (prompt style and sampler defaults per task,
mro/evaluation/protocols.py), the step counts to evaluate, and the decoder's settings: a
`SamplerConfig` (the protocol's unless given), a `SearchConfig` (None = the plain sampler;
best-of-n is the search with select=none) and its `RewardConfig`, or instead of the search
a `CascadeConfig` (the verified cascade). `EvalConfig.build` makes one from flat options
the way the CLI does: unset options keep the protocol's defaults, including its search and
reward defaults when a search is asked for, and its commit rule (compact on the shipped
tasks: threshold 0.999 kept to the steps) unless a rule is named (`RULE_FIELDS`; `threshold
none` is the fixed schedule) or the decoder is the cascade.

Steps are integers or fractions of the response length: `L` (= gen_length, one token
per step; also `full`), `L/2`, `L/4`, ... Bad input (task, protocol, steps, limit,
sampler fields) raises ValueError here, before anything is loaded or compiled.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mro import options
from mro.evaluation.protocols import Protocol, get_protocol
from mro.loading import is_shipped
from mro.messages import quoted
from mro.method.search.decode import default_rewards, search_rewards
from mro.method.search.settings import CascadeConfig, SearchConfig
from mro.sampling.schedule import FAST, SamplerConfig, resolve_steps
from rewards.combine import RewardConfig
from rewards.tasks import SPLITS, get_task

# The sampler fields a protocol sets (the others keep SamplerConfig's defaults).
PROTOCOL_FIELDS = ("gen_length", "block_length", "temperature", "remasking", "schedule")


def parse_steps(text: str) -> tuple[str, ...]:
  """"2,4,L/2" -> ("2", "4", "L/2") (checked against gen_length later)."""
  items = tuple(s.strip() for s in text.split(","))
  if not all(items):
    raise ValueError(f"steps must be a comma-separated list like 2,4,8 or L,L/2; got "
                     f"{quoted(text)}")
  return items


# Sampler fields that name a commit rule: given any (None too: `--threshold none`), the
# protocol's rule (Protocol.threshold, fixed_steps) gives way.
RULE_FIELDS = ("threshold", "factor", "correct_below")


def protocol_sampler(protocol: Protocol, fields: dict[str, Any], steps: tuple = (), *,
                     rule: bool = True) -> SamplerConfig:
  """The protocol's sampler with `fields` (SamplerConfig fields) replacing its own, at the
  first of `steps` (else the protocol's steps for the response length). The protocol's
  commit rule applies when `rule` and `fields` name none of RULE_FIELDS."""
  p = dataclasses.replace(protocol, **{k: v for k, v in fields.items()
                                       if k in PROTOCOL_FIELDS})
  first = resolve_steps(steps[0], p.gen_length) if steps else None
  rule = rule and not any(k in fields for k in RULE_FIELDS)
  return dataclasses.replace(p.sampler_config(first, rule=rule), **{
      k: v for k, v in fields.items() if k not in PROTOCOL_FIELDS})


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """One `mro eval` run.

  steps: the step counts to evaluate (() = the sampler's).
  sampler: the sampler settings (None = the protocol's); each steps value replaces its
    steps.
  search: None = the plain sampler; else the MRO search (best-of-N: select=none).
  cascade: the verified cascade instead (search must then be None); its stages replace
    fields of each steps value's sampler.
  rewards: the search's rewards (None = the protocol's, less R_ppl when the run has no
    scorer: `resolved_rewards`).
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
  sampler: SamplerConfig | None = None
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
    get_task(self.task)  # ValueError listing the known tasks
    get_protocol(self.protocol)  # ValueError listing the known protocols
    if self.sampler is None:  # the cascade's stages are its rules
      object.__setattr__(self, "sampler", protocol_sampler(
          get_protocol(self.protocol, self.task), {}, steps, rule=self.cascade is None))
    if not isinstance(self.sampler, SamplerConfig):
      raise ValueError(f"sampler must be a SamplerConfig, got {type(self.sampler).__name__} "
                       "(EvalConfig.build takes sampler options by name)")
    if self.split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {quoted(self.split)}")
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
            fast: bool = False, model: str | Path | None = None, rule: bool = True,
            **options_and_fields) -> EvalConfig:
    """An EvalConfig from flat options, as the CLI gives them: `search` is none, mro,
    best-of-n or cascade (`options.decoder`); sampler, search, reward and cascade options
    use their flag names (mro/options.py: gen_length, threshold, k, search_temperature,
    rewards, stages, ...); unset ones (absent or None) keep the protocol's defaults.
    `fast`: the recommended fast decoding (`mro.sampling.schedule.FAST`), under any sampler
    option given explicitly. `model`: the model it will evaluate, which with reward options
    says whether R_ppl has a scorer (a shipped model's) as `search_rewards` decides. `rule`
    False: the protocol's commit rule is left out (the fixed schedule unless a rule is
    given; the cascade always leaves it out). Other keywords are EvalConfig fields."""
    given = {k: v for k, v in options_and_fields.items() if v is not None}
    rest = {k: v for k, v in given.items() if k not in options.DESTS}
    steps = rest.pop("steps", ())
    steps = parse_steps(steps) if isinstance(steps, str) else tuple(steps)
    p = get_protocol(protocol, task)
    reward_fields = options.overrides(given, RewardConfig)
    method = options.decoder(search, search_fields=options.overrides(given, SearchConfig),
                             reward_fields=reward_fields,
                             cascade_fields=options.overrides(given, CascadeConfig),
                             search_base=p.search)
    rewards = None
    if isinstance(method, SearchConfig) and reward_fields:
      rewards = search_rewards(p.rewards, reward_fields, has_task=True,
                               has_scorer=rest.get("scorer") is not None or is_shipped(model))
    sampler = protocol_sampler(p, {**(dict(FAST) if fast else {}),
                                   **options.overrides(given, SamplerConfig)}, steps,
                               rule=rule and not isinstance(method, CascadeConfig))
    return cls(task=task, protocol=protocol, steps=steps, sampler=sampler,
               search=method if isinstance(method, SearchConfig) else None, rewards=rewards,
               cascade=method if isinstance(method, CascadeConfig) else None, **rest)

  def resolved_protocol(self) -> Protocol:
    """The protocol for this task with the sampler's lengths and the limit applied."""
    overrides = {k: getattr(self.sampler, k) for k in PROTOCOL_FIELDS}
    if self.limit is not None:
      overrides["limit"] = self.limit
    return dataclasses.replace(get_protocol(self.protocol, self.task), **overrides)

  def resolved_rewards(self, has_scorer: bool = True) -> RewardConfig:
    """The search's rewards: as given, else the protocol's less what this run cannot
    compute (R_ppl without a scorer; `default_rewards`)."""
    if self.rewards is not None:
      return self.rewards
    return default_rewards(get_protocol(self.protocol, self.task).rewards,
                           has_scorer=has_scorer, has_task=True)

  def sampler_configs(self) -> tuple[SamplerConfig, ...]:
    """One SamplerConfig per steps value (SamplerConfig checks that each divides)."""
    items = self.steps or (self.sampler.steps,)
    steps = [resolve_steps(s, self.sampler.gen_length) for s in items]
    if len(set(steps)) != len(steps):
      raise ValueError(f"steps {quoted(list(items))} name the same number of steps twice: "
                       f"{quoted(steps)}")
    if self.sampler.adaptive and not self.sampler.fixed_steps and len(steps) > 1:
      raise ValueError("with threshold or factor set the number of steps adapts per row; "
                       f"give at most one steps value (got {list(items)}), or add fixed_steps "
                       "to keep each to its steps")
    return tuple(dataclasses.replace(self.sampler, steps=s) for s in steps)


def option_names() -> frozenset[str]:
  """The keys of a flat description of an eval, as `EvalConfig.build` takes it (the options
  of `mro eval`, a sweep's `eval:`): EvalConfig's plain fields, `search` (the decoder's
  name), `fast` and `model`, and every sampler, search, reward and cascade option."""
  typed = {"sampler", "search", "rewards", "cascade"}
  plain = {f.name for f in dataclasses.fields(EvalConfig)} - typed
  return frozenset(plain | {"search", "fast", "model"} | options.DESTS)
