"""What a sweep reports, read only from the runs' workdirs: the summary files and the one
line printed when a run ends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mro.files import read_jsonl, write_atomic
from mro.sweeps.spec import Run


def is_done(run: Run) -> bool:
  return (run.workdir / "done.json").exists()


def log_path(run: Run, process_id: int = 0) -> Path:
  """The run's log: every program's output, appended (`sweep.log`; `sweep.host<i>.log` for
  process i > 0 of a multi-host run)."""
  return run.workdir / ("sweep.log" if process_id == 0 else f"sweep.host{process_id}.log")


def outcome(run: Run) -> str:
  """'accuracy 51.2% at 64 steps, ...' from eval.jsonl, else the last training step."""
  records = [e for e in read_jsonl(run.workdir / "eval.jsonl") if "accuracy" in e]
  if records:
    return "accuracy " + ", ".join(
        f"{100 * e['accuracy']:.1f}% at {e.get('steps')} steps" for e in records)
  metrics = read_jsonl(run.workdir / "metrics.jsonl")
  if metrics:
    last = metrics[-1]
    loss = f", loss {last['loss']:.4f}" if isinstance(last.get("loss"), float) else ""
    return f"step {last.get('step')}{loss}"
  return "no eval.jsonl or metrics.jsonl"


def rows(runs: list[Run]) -> list[dict[str, Any]]:
  """One row per run and evaluated setting, read from the workdirs."""
  out = []
  for r in runs:
    base = {"run": r.name, "sets": list(r.sets), "done": is_done(r)}
    metrics = read_jsonl(r.workdir / "metrics.jsonl")
    if metrics:
      vals = [x["val_score"] for x in metrics if "val_score" in x]
      base.update(steps=metrics[-1].get("step"), best_val=max(vals) if vals else None)
    records = read_jsonl(r.workdir / "eval.jsonl")
    if not records:
      out.append(base)
    for e in records:
      groups = {k: g["accuracy"] for k, g in (e.get("groups") or {}).items()}
      out.append({**base, "task": e["task"], "eval_steps": e["steps"], "n": e["n"],
                  "accuracy": e["accuracy"], "nfe_per_prompt": e.get("nfe_per_prompt"),
                  **({"groups": groups} if groups else {})})
  return out


def summarize(runs: list[Run], sweep_dir: Path) -> list[dict[str, Any]]:
  """The rows, also written to sweep_dir/summary.jsonl and (a table) summary.md."""
  table = rows(runs)
  write_atomic(Path(sweep_dir) / "summary.jsonl", "".join(json.dumps(x) + "\n" for x in table))
  write_atomic(Path(sweep_dir) / "summary.md", format_summary(table))
  return table


def format_summary(rows: list[dict[str, Any]]) -> str:
  """Markdown table: one row per run, accuracy per evaluated step count as columns, then
  (for a task that names example groups, e.g. Sudoku's unique / several) accuracy per
  step count and group."""
  steps = sorted({r["eval_steps"] for r in rows if "eval_steps" in r}, reverse=True)
  groups = sorted({g for r in rows for g in r.get("groups", {})})
  by_run: dict[str, dict] = {}
  for r in rows:
    entry = by_run.setdefault(r["run"], {"run": r["run"], "best_val": r.get("best_val")})
    if "eval_steps" in r:
      entry[r["eval_steps"]] = r["accuracy"]
      for g, acc in r.get("groups", {}).items():
        entry[(r["eval_steps"], g)] = acc
  columns = steps + [(s, g) for s in steps for g in groups]
  head = ["run", "best val"] + [f"steps {c}" if isinstance(c, int) else
                                f"steps {c[0]} {c[1]}" for c in columns]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  fmt = lambda v: "-" if v is None else f"{100 * v:.1f}"
  for e in by_run.values():
    lines.append("| " + " | ".join([e["run"], fmt(e["best_val"])]
                                   + [fmt(e.get(c)) for c in columns]) + " |")
  return "\n".join(lines) + "\n"
