"""Countdown: how many few-step failures combine parts of two valid answers, token by token.

    python -m experiments.bench.countdown_mixing GENERATIONS.jsonl [--tokenizer DIR]
        [--out SUMMARY.json] [--examples 3]

GENERATIONS.jsonl is the `<out stem>.generations.jsonl` file of a compact-style Countdown
`mro eval`, for example (256 test puzzles of the shipped model; L = 48):

    mro eval --task countdown --model default --steps L,L/2,L/4,L/8 --threshold none \
        --out /tmp/cd/cd.jsonl
    python -m experiments.bench.countdown_mixing /tmp/cd/cd.generations.jsonl

Outputs are classified by `mro.evaluation.mixing.countdown_position_kind`. Each puzzle
(numbers and target, read from its prompt `Make 023 from 030,100,093`) gets its
*renderings* (`mixing.renderings`): every expression tree over its numbers, each used
once, any operand order, + - * /, whose exact value is the target, written as the task
writes its training target (CountdownTask._example: think steps zero-padded to the
prompt's width + 1, the answer with every inner operation in parentheses); distinct texts
only. The task shows one canonical solution; the others render the same way. Puzzles are
*single* (one rendering) or *several*.

Positions are the tokens of the model's tokenizer (`--tokenizer`, default the shipped
Countdown model's: one token per digit, operator, comma and tag, a few merged pairs such as
`-(` in the answer), the output re-encoded from its text; `--tokenizer chars` uses
characters. A wrong output (score `correct` 0) is compared position by position with the
renderings of its own token length. With d1 the fewest positions where it differs from
one rendering and d2 the fewest positions that neither of two renderings has:
- `mix` (strict): d2 = 0 < d1: every token is the token of rendering A or of rendering B at
  that position, yet it is neither, so it takes at least one token from each (two valid
  answers are needed to explain it, none suffices). `mix distinct`: some such A and B are
  different solutions, not only operand orders of + or * in one (trees equal up to
  commutation are one solution). `mix 2+`: a mix with d1 >= 2, no valid answer within one
  token (one slip that lands on another answer's token there cannot explain it);
- `mix3`: every token is some rendering's at that position, but no two explain it all;
- `stray`: some token is no rendering's at its position (an arithmetic slip, a wrong
  digit); `loose` counts every same-length wrong output with d2 < d1 (the nearest two
  renderings explain more tokens than the nearest one), strict mixes included;
- `length`: no rendering has its token length, but it keeps the compact format
  (`<think>...</think><answer>...</answer>`); `malformed`: neither.
`think mix` applies the strict test to the think part alone (the tokens between the tags,
against the renderings' think parts of that length): the reasoning mixes two solutions,
whatever the answer does. `chance` is the reference for the strict test's looseness: of
every one-digit change to a rendering (each digit token, each other digit), the share that
would count as a mix, because another rendering of that length has that digit there.

`new` takes the setting with the most steps (L: one token per step, so no two tokens are
committed together) as the reference: the outputs wrong at fewer steps on puzzles it
solved, the few-step failures proper, and how many of them are (think) mixes.

Prints two tables per file (puzzles and failure rates; kinds of wrong outputs) and writes
the counts, with a few example mixes and their two renderings, as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mro import paths
from mro.evaluation.mixing import Units, countdown_position_kind, renderings, splitter
from mro.files import read_jsonl

_PROMPT = re.compile(r"Make (-?\d+) from (\d+(?:,\d+)*)")
KINDS = ("mix", "mix3", "stray", "length", "malformed")


# --- puzzles -----------------------------------------------------------------------------


def parse_prompt(prompt: str, where: str = "prompt") -> tuple[tuple[int, ...], int, int]:
  """(numbers, target, prompt width) of a compact Countdown prompt."""
  m = _PROMPT.fullmatch(prompt.strip()) if isinstance(prompt, str) else None
  if m is None:
    raise ValueError(f"{where}: not a compact Countdown prompt (`Make 023 from 030,100,093`):"
                     f" {str(prompt)[:80]!r}")
  numbers = m.group(2).split(",")
  return tuple(int(n) for n in numbers), int(m.group(1)), len(numbers[0])


class Puzzles:
  """Each prompt's puzzle and renderings (their positions too, cached) in the positions of
  `tokenizer` (a model directory, or `chars`)."""

  def __init__(self, tokenizer: str):
    try:
      self.split, self.digits = splitter(tokenizer)
    except ValueError as e:
      raise ValueError(f"--tokenizer: {e}") from e
    self.unit = tokenizer
    self.digit_ids = sorted(self.digits)
    self._cache: dict[str, dict[str, Any]] = {}

  def get(self, prompt: str, where: str = "prompt") -> dict[str, Any]:
    if prompt not in self._cache:
      numbers, target, width = parse_prompt(prompt, where)
      try:  # think numbers as the compact training target writes them: width + 1 wide
        rendered = renderings(numbers, target, width + 1)
      except ValueError as e:
        raise ValueError(f"{where}: {e}") from e
      self._cache[prompt] = {"numbers": numbers, "target": target, "width": width + 1,
                             "texts": list(rendered),
                             "tokens": [self.split(r) for r in rendered]}
    return self._cache[prompt]


def classify(puzzles: Puzzles, prompt: str, output: str) -> dict[str, Any]:
  """The kind of one output (`mixing.countdown_position_kind` in the puzzles' positions)."""
  p = puzzles.get(prompt)
  return countdown_position_kind(p["numbers"], p["target"], output, p["width"], puzzles.unit)


def chance(candidates: Sequence[Units], digits: frozenset[int],
           digit_ids: Sequence[int]) -> tuple[int, int]:
  """(one-digit changes of a candidate that another candidate of its length has at that
  position, all one-digit changes): how often a random digit slip passes as a mix."""
  hit = total = 0
  for a in candidates:
    same = [c for c in candidates if len(c) == len(a)]
    for p, t in enumerate(a):
      if t in digits:
        there = {c[p] for c in same}
        others = [d for d in digit_ids if d != t]
        total += len(others)
        hit += sum(d in there for d in others)
  return hit, total


# --- one setting, one file ---------------------------------------------------------------


def _key(g: dict[str, Any]) -> tuple[str, str]:
  return (str(g.get("example_id")), g["prompt"])


def summarize(puzzles: Puzzles, gens: Sequence[dict[str, Any]], examples: int = 3,
              where: str = "generations",
              reference: dict[tuple[str, str], bool] | None = None) -> dict[str, Any]:
  """Counts over one setting's generations (module docstring); with `reference`
  ({example: correct} of the setting with the most steps), `new` counts the outputs wrong
  here whose puzzle the reference solved, and how many of them are mixes."""
  s: dict[str, Any] = {"n": 0, "wrong": 0, "single": {"n": 0, "wrong": 0},
                       "several": {"n": 0, "wrong": 0}, "unsolvable": {"n": 0, "wrong": 0},
                       "kinds": dict.fromkeys(KINDS, 0), "mix_distinct": 0, "mix_2plus": 0,
                       "loose": 0, "think_mix": 0,
                       "new": {"wrong": 0, "mix": 0, "think_mix": 0}, "examples": []}
  for k, g in enumerate(gens):
    count = len(puzzles.get(g["prompt"], f"{where} row {k + 1}")["texts"])
    group = s["single"] if count == 1 else s["several"] if count else s["unsolvable"]
    wrong = not g["score"]["correct"]
    for scope in (s, group):
      scope["n"] += 1
      scope["wrong"] += wrong
    if not wrong:
      continue
    c = classify(puzzles, g["prompt"], g["output"])
    if c["kind"] == "valid":  # a correct text scored wrong: the renderings are off
      raise ValueError(f"{where} row {k + 1}: scored wrong, yet a valid answer: {g['output']!r}")
    s["kinds"][c["kind"]] += 1
    is_mix = c["kind"] == "mix"
    s["mix_distinct"] += is_mix and c["distinct"]
    s["mix_2plus"] += is_mix and c["d1"] >= 2
    s["loose"] += c["loose"]
    s["think_mix"] += c["think_mix"]
    if reference is not None and reference.get(_key(g)):
      s["new"]["wrong"] += 1
      s["new"]["mix"] += is_mix
      s["new"]["think_mix"] += c["think_mix"]
    if is_mix and len(s["examples"]) < examples:
      s["examples"].append({"prompt": g["prompt"], "output": g["output"],
                            "from": list(c["pair"]), "distinct": c["distinct"]})
  return s


def puzzle_summary(puzzles: Puzzles, prompts: Sequence[str]) -> dict[str, Any]:
  counts = sorted(len(puzzles.get(p)["texts"]) for p in prompts)
  hit = total = 0
  for p in prompts:
    h, t = chance(puzzles.get(p)["tokens"], puzzles.digits, puzzles.digit_ids)
    hit, total = hit + h, total + t
  return {"n": len(counts), "single": counts.count(1),
          "several": sum(c > 1 for c in counts), "unsolvable": counts.count(0),
          "renderings_median": counts[len(counts) // 2] if counts else 0,
          "renderings_max": counts[-1] if counts else 0,
          "chance_one_digit_mix": hit / total if total else 0.0}


def measure(path: str | Path, tokenizer: str, examples: int = 3) -> dict[str, Any]:
  rows = read_jsonl(path)
  if not rows:
    raise ValueError(f"{path}: no generations (expected an `mro eval` .generations.jsonl file)")
  for k, g in enumerate(rows):
    missing = [key for key in ("setting_id", "steps", "prompt", "output", "score")
               if key not in g]
    if missing:
      raise ValueError(f"{path} row {k + 1}: missing {missing} (not an `mro eval` "
                       "generations row)")
  puzzles = Puzzles(tokenizer)
  settings: dict[str, list] = {}
  for g in rows:
    settings.setdefault(g["setting_id"], []).append(g)
  ordered = sorted(settings.items(), key=lambda kv: -kv[1][0]["steps"])  # stable: ties
  reference = {_key(g): bool(g["score"]["correct"]) for g in ordered[0][1]}  # in file order
  out = []
  for k, (sid, gens) in enumerate(ordered):
    out.append({"setting_id": sid, "steps": gens[0]["steps"],
                **summarize(puzzles, gens, examples, str(path), reference if k else None)})
  return {"input": Path(path).name, "tokenizer": _shown(tokenizer),
          "puzzles": puzzle_summary(puzzles, sorted({g["prompt"] for g in rows})),
          "settings": out}


def _shown(tokenizer: str) -> str:
  try:
    return str(Path(tokenizer).resolve().relative_to(paths.ROOT))
  except ValueError:
    return tokenizer


# --- tables ------------------------------------------------------------------------------


def _rate(part: int, whole: int) -> str:
  return "-" if not whole else f"{part}/{whole} ({100 * part / whole:.0f}%)"


def tables(summary: dict[str, Any]) -> str:
  pz = summary["puzzles"]
  lines = [f"{summary['input']}: {pz['n']} puzzles, {pz['single']} with one rendering, "
           f"{pz['several']} with several (median {pz['renderings_median']}, max "
           f"{pz['renderings_max']}); positions: tokens of {summary['tokenizer']}; a one-digit "
           f"slip passes the strict mix test by chance {100 * pz['chance_one_digit_mix']:.1f}%"
           " of the time", "",
           "| steps | n | wrong | wrong, single | wrong, several | new wrong | new: mix | "
           "new: think mix |", "|" + "---|" * 8]
  for k, s in enumerate(summary["settings"]):
    new = s["new"]
    lines.append(f"| {s['steps']} | {s['n']} | {_rate(s['wrong'], s['n'])} | "
                 f"{_rate(s['single']['wrong'], s['single']['n'])} | "
                 f"{_rate(s['several']['wrong'], s['several']['n'])} | "
                 + (f"{new['wrong']} | {_rate(new['mix'], new['wrong'])} | "
                    f"{_rate(new['think_mix'], new['wrong'])} |" if k else "- | - | - |"))
  head = ["steps", "wrong", "mix", "mix distinct", "mix 2+", "mix3", "stray", "length",
          "malformed", "loose", "think mix"]
  lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for s in summary["settings"]:
    k = s["kinds"]
    cells = [s["steps"], s["wrong"], _rate(k["mix"], s["wrong"]), s["mix_distinct"],
             s["mix_2plus"], k["mix3"], k["stray"], k["length"], k["malformed"],
             _rate(s["loose"], s["wrong"]), _rate(s["think_mix"], s["wrong"])]
    lines.append("| " + " | ".join(map(str, cells)) + " |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("generations", help="an `mro eval` <out stem>.generations.jsonl file "
                 "(compact-style Countdown)")
  p.add_argument("--tokenizer", default=str(paths.MODELS / "default" / "countdown"),
                 help="model directory whose tokenizer defines positions, or `chars` "
                 "(default: the shipped Countdown model's)")
  p.add_argument("--out", default=None, help="write the JSON summary here")
  p.add_argument("--examples", type=int, default=3,
                 help="example mixes kept per setting in the JSON (default: 3)")
  a = p.parse_args(argv)
  if a.examples < 0:
    raise ValueError(f"--examples must be >= 0, got {a.examples}")
  summary = measure(a.generations, a.tokenizer, a.examples)
  print(tables(summary), end="")
  if a.out:
    Path(a.out).write_text(json.dumps(summary, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
