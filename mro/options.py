"""The one table that maps command-line options onto settings fields.

Every sampler, search, reward and cascade flag of `mro sample` and `mro eval` is a field
of `SamplerConfig`, `SearchConfig`, `RewardConfig` or `CascadeConfig`; this table names the
flag, the field and its help line once. The CLI builds its flags from it (defaults shown from the
dataclasses), and `overrides` turns parsed arguments back into per-type field
dictionaries. A flag left unset (None) keeps whatever the base settings say (a model's
recorded sampler, a protocol's defaults). `decoder` turns the `--search` choice and its
options into the settings of the decoder it names.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

from mro.messages import quoted
from mro.method.search.settings import SEARCHES, SELECT, CascadeConfig, SearchConfig
from mro.sampling.schedule import CACHES, REMASKING, SCHEDULES, SamplerConfig
from rewards.combine import RewardConfig
from rewards.quality import SOURCES


class Option(NamedTuple):
  flag: str  # without the leading dashes
  field: str  # the dataclass field it sets
  type: Any
  help: str
  choices: tuple | None = None


def count_or_all(text: str) -> int | str:
  """A positive count or 'all' (n_verify)."""
  if text == "all":
    return text
  try:
    return int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {quoted(text)}")


NONE = "none"  # the value of an optional number given as unset on purpose


def is_none(value: Any) -> bool:
  """Whether a given value is the word 'none' (any case, spaces around)."""
  return isinstance(value, str) and value.strip().lower() == NONE


def number_or_none(text: str) -> float | str:
  """A number, or 'none' (NONE): the field set to None, e.g. `--threshold none`."""
  if is_none(text):
    return NONE
  try:
    return float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number or 'none', got {quoted(text)}")


SAMPLER_OPTIONS = (
    Option("gen-length", "gen_length", int, "response length in tokens"),
    Option("block-length", "block_length", int,
           "semi-autoregressive block size; must divide gen-length"),
    Option("temperature", "temperature", float, "0 = greedy (argmax); else Gumbel-max"),
    Option("remasking", "remasking", str,
           "which masked positions to commit first (maskgit_plus and topk_margin are "
           "Dream's names of low_confidence and margin)", REMASKING),
    Option("schedule", "schedule", str,
           "tokens per step: llada (equal shares of each block) or dream (Dream's "
           "timesteps linspace(1, eps, steps+1), int(n_masked * (1 - s/t)) per step)",
           SCHEDULES),
    Option("schedule-eps", "schedule_eps", float, "the last timestep of --schedule dream"),
    Option("threshold", "threshold", number_or_none,
           "confidence-threshold parallel decoding: commit every masked token of the block "
           "whose confidence is >= T (0 < T <= 1), at least one per step; 'none': the "
           "fixed schedule (the compact protocol's sudoku, countdown and arith otherwise "
           "use 0.999 kept to the steps)"),
    Option("fixed-steps", "fixed_steps", bool,
           "with --threshold or --factor: keep to --steps (each step commits at least "
           "ceil(masked left / steps left), the most confident first), so a prompt costs "
           "exactly STEPS passes"),
    Option("cfg-scale", "cfg_scale", float, "classifier-free guidance weight (0 = off)"),
    Option("factor", "factor", number_or_none,
           "Fast-dLLM's factor rule: commit the n most confident where (n+1)(1 - c_n) < f"),
    Option("cache", "cache", str,
           "block KV cache: prefix (cache the prompt and finished blocks) or dual (also the "
           "masked later blocks); none = exact", CACHES),
    Option("refresh-every", "refresh_every", int,
           "with a cache, also refill it every N steps inside a block (1 = exact)"),
    Option("stop-at-eos", "stop_at_eos", bool,
           "once a row commits EOS, the rest of its response is EOS and it stops"),
    Option("correct-below", "correct_below", number_or_none,
           "token correction: after each step, re-predict its least confident new tokens "
           "with only their own position masked and re-mask those with probability < P "
           "(0 < P < 1; each position once; extra leave-one-out rows count in the NFE)"),
    Option("correct-rows", "correct_rows", int,
           "token correction: leave-one-out rows per row and step (default: the tokens "
           "one step commits; the block length with threshold/factor)"),
    Option("correct-max", "correct_max", int,
           "token correction: most tokens re-masked per row and step"),
)

SEARCH_OPTIONS = (
    Option("k", "k", int, "candidates per live sequence at each search point"),
    Option("group-steps", "group_steps", int,
           "w, denoising steps between search points (default: steps/2; the mro "
           "protocol: steps/4)"),
    Option("search-points", "search_points", int,
           "selections along a trajectory when --group-steps is not given (w = steps / "
           "search points)"),
    Option("search-temperature", "temperature", float,
           "sampling temperature of the candidates (the paper: 0.25)"),
    Option("select", "select", str,
           "argmax (the paper) or importance resampling ∝ exp(R/τ)", SELECT[:2]),
    Option("resample-temperature", "resample_temperature", float,
           "τ of select=resample"),
    Option("n-live", "n_live", int, "live sequences per prompt"),
    Option("branch-steps", "branch_steps", int,
           "candidates sample at the search temperature only in the first N steps, then "
           "decode greedily (1: branch at the first step; default: every step)"),
    Option("final-verify", "final_verify", count_or_all,
           "R_tv of the final group over the whole answer: re-mask it in N interleaved "
           "rows per candidate, or 'all' (one row per position); default: off"),
    Option("forward-chunks", "forward_chunks", int,
           "run the candidates' forward passes in this many slices (default: k x n-live on "
           "CPU, where narrower batches are faster per row; 1 on accelerators)"),
)

REWARD_OPTIONS = (
    Option("rewards", "use", str,
           "any of tv, ppl, q joined by , or +, each optionally weighted as name=weight "
           "(e.g. tv,ppl=0.5,q); 'all'; 'none'"),
    Option("quality-source", "quality_source", str,
           "what makes an answer correct for R_q: vote (majority of the candidates), "
           "verifier (the task's label-free check) or label", SOURCES),
    Option("n-verify", "n_verify", count_or_all,
           "positions re-predicted per group for R_tv, or 'all' the group committed"),
)

CASCADE_OPTIONS = (
    Option("stages", "stages", str,
           "the cascade's decoders, cheapest first, separated by ';', each sampler fields "
           "as field=value[,field=value] (steps may be L/k), e.g. "
           "'threshold=0.99;steps=L,threshold=none'"),
    Option("accept", "accept", float,
           "an answer whose R_tv (mean log-probability of its tokens, re-predicted a share "
           "at a time) is >= this is final; the others go to the next stage"),
    Option("verify-chunks", "verify_chunks", int,
           "verification rows per answer: each re-masks every n-th answer position"),
)

TABLES = {SamplerConfig: SAMPLER_OPTIONS, SearchConfig: SEARCH_OPTIONS,
          RewardConfig: REWARD_OPTIONS, CascadeConfig: CASCADE_OPTIONS}
# the argparse destinations of every option above (gen_length, k, search_temperature, ...)
DESTS = frozenset(o.flag.replace("-", "_") for table in TABLES.values() for o in table)


def _default(cls, field: str, base=None):
  if base is not None:
    return getattr(base, field)
  for f in dataclasses.fields(cls):
    if f.name == field:
      return f.default
  raise KeyError(field)


def add_options(parser: argparse.ArgumentParser, cls, title: str, *, skip=(),
                defaults=None, show_default: bool = True) -> None:
  """Adds the flags of `cls` (every default None: unset flags change nothing). The help
  shows the default from `defaults` (an instance) or the dataclass."""
  group = parser.add_argument_group(title)
  for opt in TABLES[cls]:
    if opt.flag in skip:
      continue
    text = opt.help
    default = _default(cls, opt.field, defaults)
    if show_default and default is not None and "(default:" not in text:
      if isinstance(default, tuple):
        default = (";" if opt.field == "stages" else ",").join(default) or "none"
      text += f" (default: {default})"
    dest = opt.flag.replace("-", "_")
    if opt.type is bool:  # a switch: given = True, absent = unset
      group.add_argument(f"--{opt.flag}", dest=dest, action="store_const", const=True,
                         default=None, help=text)
    else:
      group.add_argument(f"--{opt.flag}", dest=dest, type=opt.type, default=None,
                         choices=opt.choices, help=text)


def overrides(args: argparse.Namespace | Mapping[str, Any], cls) -> dict[str, Any]:
  """{field: value} of the flags of `cls` that were given (not None); an optional number
  given as 'none' is the field set to None."""
  get = args.get if isinstance(args, Mapping) else (lambda k: getattr(args, k, None))
  out = {}
  for opt in TABLES[cls]:
    value = get(opt.flag.replace("-", "_"))
    if value is not None:
      out[opt.field] = None if opt.type is number_or_none and is_none(value) else value
  return out


def flags_of(args: argparse.Namespace, *classes) -> dict[str, Any]:
  """{dest: value} of the given flags (set or not) of the settings types `classes`."""
  return {o.flag.replace("-", "_"): getattr(args, o.flag.replace("-", "_"), None)
          for cls in classes for o in TABLES[cls]}


DECODERS = ("none", *SEARCHES, "cascade")  # what `--search` names


def _flag_names(cls, fields) -> set[str]:
  """The flags (argparse destinations) that set `fields` of `cls`."""
  by_field = {o.field: o.flag.replace("-", "_") for o in TABLES[cls]}
  return {by_field.get(f, f) for f in fields}


def decoder(search: str, *, search_fields: Mapping[str, Any] | None = None,
            reward_fields: Mapping[str, Any] | None = None,
            cascade_fields: Mapping[str, Any] | None = None, scorer: bool = False,
            search_base: SearchConfig | None = None) -> SearchConfig | CascadeConfig | None:
  """The decoder `--search` names, built from its options: `none` (None: the plain
  sampler), `mro` (the search: `search_base` with `search_fields`), `best-of-n` (that
  search never selecting: select=none, the one way the settings write best-of-n) or
  `cascade` (a CascadeConfig of `cascade_fields`). Options of another decoder are refused
  naming their flags: search and reward options (and `scorer`, a --scorer given) belong to
  mro and best-of-n, cascade options to cascade."""
  if search not in DECODERS:
    raise ValueError(f"search must be one of {DECODERS}, got {quoted(search)}")
  search_fields, cascade_fields = dict(search_fields or {}), dict(cascade_fields or {})
  searching = _flag_names(SearchConfig, search_fields) | \
      _flag_names(RewardConfig, reward_fields or {}) | ({"scorer"} if scorer else set())
  if cascade_fields and search != "cascade":
    raise ValueError(f"cascade option(s) {sorted(_flag_names(CascadeConfig, cascade_fields))}"
                     " need --search cascade")
  if search == "cascade" and searching:
    raise ValueError(f"search option(s) {sorted(searching)} do not apply to --search "
                     "cascade (its options: --stages, --accept, --verify-chunks)")
  if search == "cascade":
    return CascadeConfig(**cascade_fields)
  if search == "none" and searching:
    raise ValueError(f"search option(s) {sorted(searching)} need --search mro or best-of-n")
  if search == "none":
    return None
  if search_fields.get("select") == "none":
    raise ValueError("select=none is best-of-n; use --search best-of-n")
  fields = {**dataclasses.asdict(search_base or SearchConfig()), **search_fields}
  if search == "best-of-n":
    fields["select"] = "none"
  return SearchConfig(**fields)
