"""Markdown tables from `mro eval` results (the README's tables are printed by this).

    python -m experiments.bench.tables runs/search/sudoku.jsonl [more.jsonl ...]

One row per evaluated setting (the latest, if a setting was run twice): the method (plain
sampler, best-of-N, MRO search with its selection, rewards and quality source), steps,
accuracy (%), the task's extra metric, mask-predictor forward passes per prompt, the causal scorer's forward passes per prompt
(R_ppl; a smaller model), and seconds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rewards.combine import parse_rewards


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


def scorer_nfe(record: dict) -> int:
  """Causal-scorer forward passes per prompt (R_ppl): recorded by `mro eval`, or for older
  records recomputed from the search settings they carry."""
  if "scorer_nfe_per_prompt" in record:
    return int(record["scorer_nfe_per_prompt"])
  s = record.get("search")
  if not s or s["search"] == "none" or "ppl" not in parse_rewards(s["rewards"]):
    return 0
  c = record["search_config"]
  return c["k"] * c["n_live"] * (record["steps"] // c["group_steps"])


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
      "NFE / prompt", "scorer NFE", "seconds"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in latest(records):
    row = [method(r), str(r["steps"]), f"{100 * r['accuracy']:.1f}"]
    if extra:
      row.append(f"{100 * r['metrics'][extra]:.1f}")
    row += [f"{r['nfe_per_prompt']:.0f}", str(scorer_nfe(r)), f"{r['seconds']:.0f}"]
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def main() -> None:
  for path in sys.argv[1:]:
    records = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    print(f"{path} ({records[0]['task']}, n = {records[0]['n']})\n")
    print(table(records) + "\n")


if __name__ == "__main__":
  main()
