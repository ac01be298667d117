"""How many few-step failures mix two valid answers: a table from `mro eval` results.

    python -m experiments.bench.mixing RESULTS.jsonl [--out TABLE.md]

RESULTS.jsonl is an `mro eval --out` file (Sudoku or compact Countdown); its generations
(RESULTS.generations.jsonl) are classified by `mro.evaluation.mixing`: per setting, the
wrong answers and how many of them are *mixed* (parts of two valid answers, none of
one), beside the other kinds, over all problems and over those with several valid
answers; Countdown also counts token-level crossovers. The examples are rebuilt from
each record's task, data, split, limit and data seed, as `mro eval` made them.

For example (Countdown at L and L/4 on 256 test problems, then the table):

    mro eval --model default --task countdown --steps L,L/2,L/4,L/8 --threshold none \
        --out runs/mix/cd.jsonl
    python -m experiments.bench.mixing runs/mix/cd.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mro.evaluation.mixing import summarize
from mro.evaluation.report import generations_path, setting_label
from mro.files import read_jsonl
from rewards.tasks import get_task


def _pct(part: int, whole: int) -> str:
  return "-" if not whole else f"{part} ({100 * part / whole:.0f}%)"


def _kinds(kinds: dict[str, int]) -> str:
  return ", ".join(f"{k} {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])) or "-"


def table(results: str | Path) -> str:
  records = [r for r in read_jsonl(results) if "setting_id" in r]
  if not records:
    raise ValueError(f"{results}: no `mro eval` records")
  gens: dict[str, list] = {}
  for g in read_jsonl(generations_path(results)):
    gens.setdefault(g["setting_id"], []).append(g)
  head = ["task", "model", "method", "steps", "n", "wrong", "mixed of wrong", "kinds",
          "several: n", "several: wrong", "several: mixed of wrong", "crossover"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  examples_of: dict[tuple, list] = {}
  for r in records:
    key = (r["task"], r.get("data"), r.get("split", "test"), r.get("limit"),
           r.get("data_seed", 0), r.get("style", "compact"))
    task = get_task(r["task"])
    if key not in examples_of:
      examples_of[key] = task.examples(key[2], path=key[1], limit=key[3], seed=key[4],
                                       style=key[5])
    c = summarize(task, examples_of[key], gens.get(r["setting_id"], []))
    if not c["n"]:
      continue  # a task or style the measure does not cover
    sev = c["several"]
    lines.append("| " + " | ".join([
        r["task"], str(r["model"]), setting_label(r), str(r["steps"]), str(c["n"]),
        str(c["wrong"]), _pct(c["kinds"].get("mixed", 0), c["wrong"]), _kinds(c["kinds"]),
        str(sev["n"]), str(sev["wrong"]), _pct(sev["kinds"].get("mixed", 0), sev["wrong"]),
        str(c["crossover"]) if r["task"] == "countdown" else "-"]) + " |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("results", help="an `mro eval --out` JSONL file")
  p.add_argument("--out", default=None, help="also write the table here")
  a = p.parse_args(argv)
  text = table(a.results)
  print(text, end="")
  if a.out:
    Path(a.out).write_text(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
