"""Markdown tables from `mro eval` results (the README's tables are printed by this).

    python -m experiments.bench.tables runs/search/sudoku.jsonl [more.jsonl ...]

One row per evaluated setting (the latest, if a setting was run twice): the method (plain sampler, best-of-N, MRO search with its
selection, rewards and quality source), steps, accuracy (%), the task's extra metric,
network forward passes per prompt, and seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def method(record: dict) -> str:
  s = record.get("search")
  if not s or s["search"] == "none":
    return "plain sampler"
  rewards = s["rewards"].replace(",", "+")
  q = f", q by {s['quality_source']}" if "q" in s["rewards"].split(",") else ""
  temp = "" if s["search_temperature"] == 1.0 else f", τ={s['search_temperature']}"
  if s["search"] == "best-of-n":
    return f"best-of-{s['k']} ({rewards}{q}{temp})"
  w = record.get("search_config", {}).get("group_steps")
  return f"MRO search k={s['k']} w={w} {s['select']} ({rewards}{q}{temp})"


def latest(records: list[dict]) -> list[dict]:
  """One record per (method, steps): a setting run again replaces its earlier result
  (kept at the position where it first appeared)."""
  rows: dict[tuple[str, int], dict] = {}
  for r in records:
    rows[(method(r), r["steps"])] = r
  return list(rows.values())


def table(records: list[dict]) -> str:
  extra = "cell_accuracy" if any("cell_accuracy" in r["metrics"] for r in records) else None
  head = ["method", "steps", "accuracy %"] + (["cell acc. %"] if extra else []) + [
      "NFE / prompt", "seconds"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in latest(records):
    row = [method(r), str(r["steps"]), f"{100 * r['accuracy']:.1f}"]
    if extra:
      row.append(f"{100 * r['metrics'][extra]:.1f}")
    row += [f"{r['nfe_per_prompt']:.0f}", f"{r['seconds']:.0f}"]
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def main() -> None:
  for path in sys.argv[1:]:
    records = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    print(f"{path} ({records[0]['task']}, n = {records[0]['n']})\n")
    print(table(records) + "\n")


if __name__ == "__main__":
  main()
