"""The `model_args` of the `mro` lm-evaluation-harness model, checked and resolved.

`mro lm-eval --model_args model=PATH,steps=L/2,search=mro,...` takes the same names as
`mro eval`'s flags (with underscores: gen_length, block_length, threshold, cache, k,
search_temperature, rewards, stages, ...; the table in mro/options.py), plus `model`
(a path or a shipped name with `task`), and the likelihood options `mc_num`,
`mc_batch_size`, `check_greedy`, and `add_bos`, `mesh`. Values arrive as lm-eval parses
them (strings, numbers, booleans) and are converted to each field's type here; an unknown
name or a bad value is a ValueError naming the model arg, before anything is loaded.

The sampler starts, as in `mro sample`, from the model's own recorded settings
(`sampler.json`, or its workdir's `sampler` section; else `SamplerConfig()`), then `fast`,
then the given fields; `steps` may be a fraction of the response length (L, L/2, ...).
A search (`search=mro` or `best-of-n`) uses `SearchConfig`'s defaults under the given
fields and the rewards of `mro sample` (R_tv, + R_ppl with a scorer, + R_q by vote with a
task); `search=cascade` the verified cascade (its `stages` contain commas: give
model_args as a JSON object then).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mro import options
from mro.loading import recorded_sampler_config, resolve_model, resolve_scorer
from mro.messages import quoted
from mro.method.search.decode import search_rewards
from mro.method.search.settings import CascadeConfig, SearchConfig
from mro.sample import SAMPLE_REWARDS
from mro.sampling import schedule
from mro.sampling.schedule import SamplerConfig, resolve_steps, with_overrides
from rewards.combine import RewardConfig
from rewards.tasks import get_task

SEARCH_CHOICES = options.DECODERS  # none, mro, best-of-n, cascade
# name -> (type, default, help); the sampler/search/reward/cascade names come from
# mro/options.py. Types: int, float, str, bool, "steps" (an int or L/k).
OWN_ARGS: dict[str, tuple[Any, Any, str]] = {
    "model": (str, None, "a model directory, a training workdir, or a shipped name "
                         "(default, default-mro: needs task)"),
    "task": (str, None, "the task of a shipped model (sudoku, countdown, arith); also lets "
                        "the search's quality reward vote"),
    "steps": ("steps", None, "denoising steps: an integer or L, L/2, L/4 ... (default: "
                             "the model's recorded setting)"),
    "fast": (bool, False, "the recommended fast decoding (threshold 0.99) under the "
                          "fields given"),
    "search": (str, "none", "none, mro, best-of-n or cascade"),
    "scorer": (str, None, "causal scorer of the ppl reward: a model dir or 'default'"),
    "seed": (int, 0, "sampling seed; request i's random stream is keyed by i"),
    "batch_size": (int, None, "prompts per sampler batch (default: lm-eval's "
                              "--batch_size; 'auto' there means 16)"),
    "mc_num": (int, 128, "loglikelihood: Monte-Carlo samples per request (as LLaDA)"),
    "mc_batch_size": (int, 32, "loglikelihood: sequences per forward pass (as LLaDA)"),
    "check_greedy": (bool, False, "loglikelihood: compute is_greedy by greedy decoding "
                                  "(len(continuation) extra passes per request); off: "
                                  "is_greedy is False"),
    "add_bos": (bool, False, "prepend the tokenizer's BOS token to every context (to "
                             "match an evaluation whose tokenizer adds one)"),
    "mesh": (str, None, "run sharded on this mesh, e.g. data=4 or fsdp=8"),
}
AUTO_BATCH_SIZE = 16


@dataclasses.dataclass(frozen=True)
class HarnessSettings:
  model_path: Path
  model: str  # as given (a shipped name or a path)
  task: str | None
  sampler: SamplerConfig
  search: str
  search_cfg: SearchConfig | None
  rewards: RewardConfig | None
  cascade: CascadeConfig | None
  scorer_path: Path | None
  seed: int
  batch_size: int
  mc_num: int
  mc_batch_size: int
  check_greedy: bool
  add_bos: bool
  mesh: str | None


def option_types() -> dict[str, Any]:
  """model arg name -> its type, for every name the `mro` model accepts."""
  types = {name: spec[0] for name, spec in OWN_ARGS.items()}
  for table in options.TABLES.values():
    for opt in table:
      types[opt.flag.replace("-", "_")] = opt.type
  return types


def convert(name: str, value: Any, kind: Any) -> Any:
  """`value` as lm-eval parsed it, converted to the model arg's type (None: unset)."""
  if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "")):
    return None
  try:
    if kind is bool:
      if isinstance(value, bool):
        return value
      text = str(value).strip().lower()
      if text not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError("expected true or false")
      return text in ("true", "1", "yes")
    if kind is int:
      if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("expected an integer")
      return int(value)
    if kind is float:
      if isinstance(value, bool):
        raise ValueError("expected a number")
      return float(value)
    if kind == "steps":
      return int(value) if isinstance(value, (int, float)) else str(value).strip()
    if kind is str:
      return str(value)
    return kind(str(value))  # e.g. options.count_or_all
  except (ValueError, TypeError) as e:
    raise ValueError(f"model_args {name}={quoted(value)}: {e}") from None


def resolve(model_args: Mapping[str, Any], lm_eval_batch_size: Any = None) -> HarnessSettings:
  """Checks and resolves the model args (see the module docstring); reads the model's
  recorded sampler settings but loads no weights."""
  types = option_types()
  unknown = sorted(set(model_args) - set(types))
  if unknown:
    raise ValueError(f"unknown model_args {unknown}; the mro model takes: "
                     f"{', '.join(sorted(types))}")
  given = {k: convert(k, v, types[k]) for k, v in model_args.items()}
  given = {k: v for k, v in given.items() if v is not None}
  own = {k: given.get(k, spec[1]) for k, spec in OWN_ARGS.items()}
  if own["model"] is None:
    raise ValueError("model_args needs model=PATH (a model directory or workdir) or a "
                     "shipped name (model=default,task=sudoku)")
  if own["search"] not in SEARCH_CHOICES:
    raise ValueError(f"model_args search must be one of {SEARCH_CHOICES}, got "
                     f"{quoted(own['search'])}")
  for name in ("mc_num", "mc_batch_size"):
    if own[name] < 1:
      raise ValueError(f"model_args {name} must be a positive integer, got {own[name]}")
  batch_size = own["batch_size"] or _harness_batch_size(lm_eval_batch_size)
  if batch_size < 1:
    raise ValueError(f"model_args batch_size must be a positive integer, got {batch_size}")
  if own["task"] is not None:
    try:
      get_task(own["task"])
    except ValueError as e:
      raise ValueError(f"model_args task: {e}") from None
  path = resolve_model(own["model"], own["task"])
  sampler = _sampler(path, given, own)
  search, cascade, rewards, scorer = _search(own, given, sampler)
  return HarnessSettings(path, str(own["model"]), own["task"], sampler, own["search"],
                         search, rewards, cascade, scorer, own["seed"], batch_size,
                         own["mc_num"], own["mc_batch_size"], own["check_greedy"],
                         own["add_bos"], own["mesh"])


def _harness_batch_size(value: Any) -> int:
  """lm-eval's own --batch_size (an int, or 'auto[:N]' which we read as 16)."""
  if value is None or str(value).startswith("auto"):
    return AUTO_BATCH_SIZE
  return convert("batch_size", value, int)


def _sampler(path: Path, given: Mapping[str, Any], own: Mapping[str, Any]) -> SamplerConfig:
  base = recorded_sampler_config(path) or SamplerConfig()
  if own["fast"]:
    base = schedule.fast(base)
  fields = options.overrides(given, SamplerConfig)
  try:
    if own["steps"] is not None:
      fields["steps"] = resolve_steps(own["steps"], fields.get("gen_length", base.gen_length))
    return with_overrides(base, **fields)
  except ValueError as e:
    raise ValueError(f"model_args: {e}") from None


def _search(own, given, sampler: SamplerConfig):
  """(SearchConfig, CascadeConfig, RewardConfig, scorer path), each None when unused: the
  decoder `options.decoder` builds from `search` and its options, and a search's rewards
  chosen as `mro sample` chooses them (`search_rewards`)."""
  search_fields = options.overrides(given, SearchConfig)
  reward_fields = options.overrides(given, RewardConfig)
  if own["search"] == "none" and (search_fields or reward_fields or own["scorer"]):
    raise ValueError("model_args: search and reward options "
                     f"{sorted({*search_fields, *reward_fields})} need search=mro or "
                     "best-of-n")
  try:
    method = options.decoder(own["search"], search_fields=search_fields,
                             reward_fields=reward_fields,
                             cascade_fields=options.overrides(given, CascadeConfig),
                             scorer=own["scorer"] is not None)
    if isinstance(method, CascadeConfig):
      method.resolve(sampler)
      return None, method, None, None
    if method is None:
      return None, None, None, None
    scfg = method.resolve(sampler)
    scorer = resolve_scorer(own["scorer"], own["task"], own["model"])
    rewards = search_rewards(SAMPLE_REWARDS, reward_fields, has_scorer=scorer is not None,
                             has_task=own["task"] is not None)
    if not rewards.on("ppl"):
      scorer = None
    elif scorer is None:
      raise ValueError("the ppl reward needs scorer=PATH (a causal model dir) or "
                       "scorer=default with task")
    return scfg, None, rewards, scorer
  except ValueError as e:
    raise ValueError(f"model_args: {e}") from None


def describe() -> str:
  """The model args and what each does (for `mro lm-eval --help` and the docs)."""
  lines = ["model_args of the mro model (same names as `mro eval`'s flags):"]
  for name, (_, default, text) in OWN_ARGS.items():
    lines.append(f"  {name:16s} {text}" + (f" (default: {default})"
                                            if default not in (None, False, "none") else ""))
  for title, cls in (("sampler", SamplerConfig), ("search", SearchConfig),
                     ("rewards", RewardConfig), ("cascade", CascadeConfig)):
    lines.append(f"  {title}: " + ", ".join(o.flag.replace("-", "_")
                                             for o in options.TABLES[cls]))
  return "\n".join(lines)
