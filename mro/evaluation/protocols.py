"""Named evaluation protocols: prompt style and sampler defaults, per task.

A protocol fills in what `mro eval` does when the user does not say: the prompt style of
the task, the response length, the semi-autoregressive block, the number of steps (as a
fraction of the response length), temperature, remasking and how many test items.
Explicit options override it; the results record the resolved values.

  protocol  style     gen_length               block_length               steps  temp
  compact   compact   sudoku 24, countdown 48,  gen_length (one block);    L      0
                      arith 56; gsm8k 256,      gsm8k 32, math500 64
                      math500 512
  llada     protocol  256; math500 512          8; math500 64              L      0
  d1        protocol  256                       32                         L/2    0
  mro       protocol  256; math500 512          64; gsm8k 8, arith 8       L/2    0.25
  dream     protocol  256; math500 512          gen_length (one block)     L      0

All but dream use low_confidence remasking and LLaDA's even schedule. dream is Dream's own
`diffusion_generate` (Dream-v0-Instruct's model card: the whole response as one block,
steps = length, alg "entropy"; greedy here, where the card samples at 0.2 with top_p),
with Dream's timestep schedule (SamplerConfig.schedule "dream").

Items: the task's default (256 for the generated test sets, the whole file for
GSM8K/MATH500) except d1: 256 for countdown and sudoku. d1 appends "<reasoning>" to the
prompt (below). `mro eval --help` prints the resolved table.

compact: the project's own small models (one token per digit and tag). Each gen_length
covers the task's longest compact target plus EOS (sudoku 18 + 1, countdown 35 + 1,
arith 54 + 1 tokens at most) and is divisible by 8, so `--steps L,L/2,L/4,L/8` all work;
one block (block_length = gen_length), as the models are trained. On sudoku, countdown
and arith, compact commits by confidence within the step budget: every token at or above
threshold 0.999, and at least ceil(masked left / steps left) of the most confident
(SamplerConfig.fixed_steps), so a prompt costs at most `steps` passes; on their validation
splits this beat the fixed schedule at every step count. `--threshold none` gives the fixed
schedule (the same number of tokens each step); naming another rule (`--threshold T`,
`--factor`, `--correct-below`, `--fast`) or the cascade replaces it.

"protocol" style uses the tasks' d1 prompts (rewards/tasks). With a tokenizer that has a
chat template (LLaDA-Instruct), the prompt is sent as one user message with the
assistant header appended; d1 then appends `<reasoning>` (`assistant_prefix`), which the
tasks' format checks accept as the response's missing opening tag.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

from mro.messages import quoted
from mro.method.search.settings import SearchConfig
from mro.sampling.schedule import REMASKING, SCHEDULES, SamplerConfig
from rewards.combine import RewardConfig
from rewards.tasks import STYLES, task_names


@dataclasses.dataclass(frozen=True)
class Protocol:
  """Evaluation defaults. block_length None = one block (the whole response); steps =
  gen_length * steps_fraction; limit None = the task's default number of items."""

  name: str
  style: str = "compact"
  gen_length: int = 64
  block_length: int | None = None
  steps_fraction: float = 1.0
  temperature: float = 0.0
  remasking: str = "low_confidence"
  limit: int | None = None
  schedule: str = "llada"  # SamplerConfig.schedule
  assistant_prefix: str = ""  # text appended to the (templated) prompt, e.g. "<reasoning>"
  # the commit rule within the step budget (SamplerConfig.threshold / fixed_steps): it
  # applies unless a rule is named (threshold, factor, correct_below; `--threshold none` is
  # the fixed schedule) or the decoder is the cascade (its stages are the rules)
  threshold: float | None = None
  fixed_steps: bool = False
  # what `--search mro` / `best-of-n` and their rewards mean when no other flag is given
  search: SearchConfig = SearchConfig()
  rewards: RewardConfig = RewardConfig(use=("tv", "ppl"))

  def __post_init__(self):
    if self.style not in STYLES:
      raise ValueError(f"protocol {self.name}: style must be one of {STYLES}, got "
                       f"{quoted(self.style)}")
    if self.gen_length <= 0:
      raise ValueError(f"protocol {self.name}: gen_length must be positive, got "
                       f"{self.gen_length}")
    if self.block_length is not None and self.block_length <= 0:
      raise ValueError(f"protocol {self.name}: block_length must be positive or None, got "
                       f"{self.block_length}")
    if not 0.0 < self.steps_fraction <= 1.0:
      raise ValueError(f"protocol {self.name}: steps_fraction must be in (0, 1], got "
                       f"{self.steps_fraction}")
    if self.temperature < 0:
      raise ValueError(f"protocol {self.name}: temperature must be >= 0, got "
                       f"{self.temperature}")
    if self.remasking not in REMASKING:
      raise ValueError(f"protocol {self.name}: remasking must be one of {REMASKING}, got "
                       f"{quoted(self.remasking)}")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"protocol {self.name}: schedule must be one of {SCHEDULES}, got "
                       f"{quoted(self.schedule)}")
    if self.limit is not None and self.limit < 1:
      raise ValueError(f"protocol {self.name}: limit must be None or >= 1, got {self.limit}")
    if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
      raise ValueError(f"protocol {self.name}: threshold must be None or in (0, 1], got "
                       f"{self.threshold}")
    if self.fixed_steps and self.threshold is None:
      raise ValueError(f"protocol {self.name}: fixed_steps keeps a threshold to the steps; "
                       "set threshold too")

  @property
  def rule(self) -> dict[str, Any]:
    """The protocol's commit rule as SamplerConfig fields ({} = the fixed schedule)."""
    if self.threshold is None:
      return {}
    return {"threshold": self.threshold, "fixed_steps": self.fixed_steps}

  def sampler_config(self, steps: int | None = None, *, rule: bool = True) -> SamplerConfig:
    """The protocol's sampler settings at `steps` (None: the protocol's steps); `rule`
    False: without its commit rule (the fixed schedule)."""
    steps = self.steps_for(self.gen_length) if steps is None else steps
    return SamplerConfig(gen_length=self.gen_length, steps=steps,
                         block_length=self.block_length or self.gen_length,
                         temperature=self.temperature, remasking=self.remasking,
                         schedule=self.schedule, **(self.rule if rule else {}))

  def steps_for(self, gen_length: int) -> int:
    """The protocol's number of steps for a response of `gen_length` tokens."""
    steps = gen_length * self.steps_fraction
    if steps != int(steps) or steps < 1:
      raise ValueError(f"protocol {self.name}: steps = gen_length {gen_length} x "
                       f"{self.steps_fraction} = {steps} is not a positive integer; "
                       "pass --steps")
    return int(steps)


# name -> (defaults, per-task overrides of those defaults)
_REGISTRY: dict[str, tuple[Protocol, Mapping[str, Mapping[str, Any]]]] = {}


def register(base: Protocol, per_task: Mapping[str, Mapping[str, Any]] | None = None) -> None:
  if base.name in _REGISTRY:
    raise ValueError(f"a protocol named {quoted(base.name)} is already registered")
  per_task = types.MappingProxyType({t: types.MappingProxyType(dict(o))
                                     for t, o in (per_task or {}).items()})
  for overrides in per_task.values():
    dataclasses.replace(base, **overrides)  # validates each task's protocol now
  _REGISTRY[base.name] = (base, per_task)


def protocol_names() -> tuple[str, ...]:
  return tuple(_REGISTRY)


def get_protocol(name: str, task: str | None = None) -> Protocol:
  """The protocol `name`, with its defaults for `task` (None: the general defaults)."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown protocol {quoted(name)}; known protocols: "
                     f"{', '.join(protocol_names())}")
  base, per_task = _REGISTRY[name]
  return dataclasses.replace(base, **per_task.get(task, {}))


# The tasks of the shipped models commit by confidence within the step budget: threshold
# 0.999 kept to the steps beat the fixed schedule at every step count on their validation
# splits (docs/sampling.md#confident-first-within-a-step-budget); GSM8K and MATH500 keep
# the fixed schedule (not measured).
BUDGET_RULE = {"threshold": 0.999, "fixed_steps": True}
register(Protocol("compact", style="compact", gen_length=64, block_length=None),
         {"sudoku": {"gen_length": 24, **BUDGET_RULE},
          "countdown": {"gen_length": 48, **BUDGET_RULE},
          "arith": {"gen_length": 56, **BUDGET_RULE},
          "gsm8k": {"gen_length": 256, "block_length": 32},
          "math500": {"gen_length": 512, "block_length": 64}})
# LLaDA's semi-autoregressive settings: GSM8K length 256 block 8, MATH length 512 block 64.
register(Protocol("llada", style="protocol", gen_length=256, block_length=8),
         {"math500": {"gen_length": 512, "block_length": 64}})
# d1: steps = length / 2, block 32, greedy, zero-shot, 256 items of Countdown and Sudoku.
register(Protocol("d1", style="protocol", gen_length=256, block_length=32, steps_fraction=0.5,
                  assistant_prefix="<reasoning>"),
         {"countdown": {"limit": 256}, "sudoku": {"limit": 256}})
# MRO: steps = length / 2, temperature 0.25, block 8 for GSM8K, 64 for the others; the
# search as the paper runs it: k = 4 candidates at 0.25, 4 search points, argmax, and the
# sum of R_tv, R_ppl and R_q by majority vote.
register(Protocol("mro", style="protocol", gen_length=256, block_length=64, steps_fraction=0.5,
                  temperature=0.25, search=SearchConfig(temperature=0.25, search_points=4),
                  rewards=RewardConfig(use=("tv", "ppl", "q"), quality_source="vote")),
         {"gsm8k": {"block_length": 8}, "arith": {"block_length": 8},
          "math500": {"gen_length": 512}})
# Dream's diffusion_generate: one block, steps = length, entropy confidence, its schedule.
register(Protocol("dream", style="protocol", gen_length=256, block_length=None,
                  remasking="entropy", schedule="dream"),
         {"math500": {"gen_length": 512}})


def describe() -> str:
  """One line per protocol and task (for `mro eval --help`)."""
  lines = []
  for name in protocol_names():
    for task in task_names():
      p = get_protocol(name, task)
      block = p.block_length or p.gen_length
      lines.append(f"  {name:8s} {task:10s} style={p.style:8s} gen={p.gen_length:<4d} "
                   f"block={block:<4d} steps={p.steps_for(p.gen_length):<4d} "
                   f"temp={p.temperature:<5g} limit={p.limit or 'task'}"
                   + (f" threshold={p.threshold}" + (" within the steps" if p.fixed_steps
                                                     else "") if p.rule else "")
                   + (f" prefix={p.assistant_prefix}" if p.assistant_prefix else "")
                   + (f" remasking={p.remasking} schedule={p.schedule}"
                      if p.schedule != "llada" else ""))
  return "\n".join(lines)
