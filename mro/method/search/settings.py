"""Settings of test-time decoding with MRO's rewards, pure data (no JAX programs), so the
CLI and experiment configs can use them cheaply.

- `SearchConfig`: the test-time search (candidates, group steps, selection); the same type
  drives `mro eval --search`, `mro sample --search` and the trajectories of reject sampling.
- `CascadeConfig`: the verified cascade (decoders cheapest first, R_tv decides who
  escalates), and `parse_stage`, the text form of one of its stages.

The rewards are `rewards.combine.RewardConfig`.
"""

from __future__ import annotations

import dataclasses
import math

from mro.messages import quoted
from mro.sampling.schedule import SamplerConfig, resolve_steps

SELECT = ("argmax", "resample", "none")  # none: candidates never selected (best-of-N)
SEARCHES = ("mro", "best-of-n")


def check_one_of(section: str, obj, name: str, choices: tuple[str, ...]) -> None:
  if getattr(obj, name) not in choices:
    raise ValueError(f"{section}.{name} must be one of {choices}, got {quoted(getattr(obj, name))}")


def check_positive(section: str, obj, names) -> None:
  for name in names:
    value = getattr(obj, name)
    if value is not None and value < 1:
      raise ValueError(f"{section}.{name} must be >= 1, got {value}")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """MRO test-time search (method.md §5).

  Every `group_steps` (w) denoising steps, each of the `n_live` live sequences of a
  prompt expands into `k` candidates sampled at `temperature`; all candidates advance w
  steps as one batch, are scored, and `select` keeps n_live of them: `argmax` (the paper)
  or `resample` (draws ∝ exp(R / resample_temperature), importance resampling). `none`
  never selects: k independent samples picked at the end (best-of-N at equal NFE).
  `group_steps=None` = the sampler's steps / `search_points` (default 2: measured best on
  the shipped Sudoku model, 91.4% at L/4 against 88.7% with the paper's 4 points; the `mro`
  protocol keeps 4), or where that does not divide the steps the largest w below it that
  does (7 steps, 2 points: w = 1), so at least `search_points` selections are made.
  `forward_chunks`: the candidates' forward passes in this many sequential slices; None
  leaves it to the search where it runs (`mro_search.forward_chunks`: the pool on a CPU,
  where narrower batches are faster per row, 1 on accelerators). An execution choice:
  results are the same up to float rounding.
  `branch_steps`: the candidates sample at `temperature` only in the first branch_steps
  denoising steps, then decode greedily (None: every step): the k candidates of a prompt
  break the symmetry between answers early and each then follows one answer.
  `final_verify`: R_tv of the final group is measured over the whole answer instead of
  the positions that group committed: every content position is re-predicted, the answer
  re-masked in `final_verify` interleaved rows per candidate ("all": one row per
  position, the leave-one-out score; `rewards.verification.chunk_verification`). None:
  the final group is verified like the others. Needs the tv reward.
  """

  k: int = 4
  group_steps: int | None = None
  temperature: float = 1.0
  select: str = "argmax"
  resample_temperature: float = 1.0
  n_live: int = 1
  forward_chunks: int | None = None
  search_points: int = 2
  branch_steps: int | None = None
  final_verify: int | str | None = None

  def __post_init__(self):
    check_positive("search", self, ("k", "n_live", "group_steps", "forward_chunks",
                                    "search_points", "branch_steps"))
    if self.final_verify is not None and self.final_verify != "all" and (
        isinstance(self.final_verify, bool) or not isinstance(self.final_verify, int)
        or self.final_verify < 1):
      raise ValueError(f"search.final_verify must be a positive number of rows, 'all' or "
                       f"None, got {quoted(self.final_verify)}")
    check_one_of("search", self, "select", SELECT)
    if not self.temperature >= 0:  # also refuses NaN
      raise ValueError(f"search.temperature must be a number >= 0, got {self.temperature}")
    if not self.resample_temperature > 0:
      raise ValueError(f"search.resample_temperature must be > 0, got "
                       f"{self.resample_temperature}")

  @property
  def method(self) -> str:
    return "best-of-n" if self.select == "none" else "mro"

  @property
  def pool(self) -> int:
    return self.n_live * self.k

  def resolve(self, sampler: SamplerConfig) -> SearchConfig:
    """This search with group_steps filled in for `sampler`, checked against it."""
    sampler.refuse_correction("the search")
    w = self.group_steps or next(d for d in range(max(1, sampler.steps // self.search_points),
                                                  0, -1) if sampler.steps % d == 0)
    if sampler.adaptive and not sampler.fixed_steps:
      raise ValueError("the search needs a fixed number of steps: unset threshold and factor, "
                       "or keep them to the steps with fixed_steps")
    if sampler.steps % w:
      raise ValueError(f"steps={sampler.steps} is not divisible by group_steps={w}")
    if self.branch_steps is not None and self.branch_steps > sampler.steps:
      raise ValueError(f"search.branch_steps={self.branch_steps} is more than the "
                       f"{sampler.steps} steps")
    if isinstance(self.final_verify, int) and self.final_verify > sampler.gen_length:
      raise ValueError(f"search.final_verify={self.final_verify} rows is more than the "
                       f"{sampler.gen_length} response positions")
    return dataclasses.replace(self, group_steps=w)

  def final_rows(self, sampler: SamplerConfig) -> int:
    """Rows per candidate of the final answer-level R_tv (0 when off)."""
    if self.final_verify is None:
      return 0
    return sampler.gen_length if self.final_verify == "all" else self.final_verify

  def check_rewards(self, rewards) -> None:
    """ValueError when a search option needs a reward that `rewards` leaves off."""
    if self.final_verify is not None and not rewards.on("tv"):
      raise ValueError("search.final_verify re-predicts the answer for R_tv; turn tv on "
                       f"(--rewards), got rewards {quoted(rewards.spec)}")

  def check(self, sampler: SamplerConfig) -> None:
    self.resolve(sampler)


_SAMPLER_FIELDS = tuple(f.name for f in dataclasses.fields(SamplerConfig))


def _stage_value(text: str):
  """A stage value: none, true/false, an integer, a number, else the text (L/2, dual)."""
  low = text.lower()
  if low in ("none", "null"):
    return None
  if low in ("true", "false"):
    return low == "true"
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def parse_stage(text: str) -> dict:
  """`threshold=0.99` or `steps=L/2,temperature=1` -> sampler fields (steps may be L/k)."""
  fields = {}
  for part in text.split(","):
    key, eq, value = (s.strip() for s in part.partition("="))
    if not eq or not key or not value:
      raise ValueError(f"cascade stage {quoted(text)}: expected field=value[,field=value...], "
                       f"e.g. threshold=0.99 or steps=L/2")
    key = key.replace("-", "_")
    if key not in _SAMPLER_FIELDS:
      raise ValueError(f"cascade stage {quoted(text)}: {quoted(key)} is not a sampler field; "
                       f"known: {list(_SAMPLER_FIELDS)}")
    if key in fields:
      raise ValueError(f"cascade stage {quoted(text)} sets {key} twice")
    fields[key] = _stage_value(value)
  return fields


@dataclasses.dataclass(frozen=True)
class CascadeConfig:
  """The verified cascade (`mro eval --search cascade`; beyond the paper, docs/method.md).

  Every prompt is decoded by the first stage (a sampler setting: the base sampler with
  the stage's fields replaced), and its answer is checked with R_tv over the whole
  answer in `verify_chunks` rows (`rewards.verification.chunk_verification`: the mean
  log-probability the model gives each committed token with a 1/verify_chunks share of
  the answer re-masked). An answer scoring >= `accept` is final; the other prompts go on
  to the next stage, and so on. Each prompt keeps the best-scoring answer of the stages
  it ran. A prompt's forward passes are those of the stages it ran plus verify_chunks per
  stage.

  stages: sampler fields per stage, cheapest first, as `field=value[,field=value]` texts
    (steps may be L or L/k) or mappings. Default: threshold 0.99 decoding (a few passes),
    then threshold 0.999, then the full L steps one token at a time: the best measured on
    the shipped Sudoku model's validation split, with the accept level chosen there too
    (docs/results.md, "Accuracy against cost").
  """

  stages: tuple = ("threshold=0.99", "threshold=0.999", "steps=L,threshold=none")
  accept: float = -1e-4
  verify_chunks: int = 3

  def __post_init__(self):
    stages = self.stages.split(";") if isinstance(self.stages, str) else self.stages
    stages = tuple(s if isinstance(s, str) else
                   ",".join(f"{k}={'none' if v is None else v}" for k, v in dict(s).items())
                   for s in stages)
    object.__setattr__(self, "stages", tuple(s.strip() for s in stages))
    if not self.stages:
      raise ValueError("cascade.stages is empty: give at least one sampler setting")
    for s in self.stages:
      parse_stage(s)
    if isinstance(self.accept, bool) or not isinstance(self.accept, (int, float)) \
        or not math.isfinite(self.accept):
      raise ValueError(f"cascade.accept must be a finite number (a mean log-probability), "
                       f"got {quoted(self.accept)}")
    check_positive("cascade", self, ("verify_chunks",))

  @property
  def method(self) -> str:
    return "cascade"

  def resolve(self, base: SamplerConfig) -> tuple[SamplerConfig, ...]:
    """One SamplerConfig per stage (ValueError naming the stage that does not fit)."""
    if self.verify_chunks > base.gen_length:
      raise ValueError(f"cascade.verify_chunks={self.verify_chunks} is more than the "
                       f"{base.gen_length} response positions")
    out = []
    for text in self.stages:
      fields = parse_stage(text)
      if "steps" in fields:
        fields["steps"] = resolve_steps(fields["steps"], fields.get("gen_length",
                                                                    base.gen_length))
      try:
        out.append(dataclasses.replace(base, **fields))
      except (TypeError, ValueError) as e:
        raise ValueError(f"cascade stage {quoted(text)}: {e}") from None
      if out[-1].gen_length != base.gen_length:
        raise ValueError(f"cascade stage {quoted(text)}: every stage answers with the same "
                         f"gen_length ({base.gen_length})")
    return tuple(out)

  def check(self, sampler: SamplerConfig) -> None:
    self.resolve(sampler)
