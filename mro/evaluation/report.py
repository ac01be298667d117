"""What `mro eval` prints and where it writes: tables, progress lines, file names.

A record is one JSON object per evaluated setting (written by `mro.evaluation.runner`);
everything here reads records only, so `mro plot`, sweep summaries and the benchmark
tables format results the same way whether they are fresh or read back from a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def generations_path(out: str | Path) -> Path:
  """results.jsonl -> results.generations.jsonl (same folder)."""
  out = Path(out)
  return out.with_name(f"{out.stem}.generations.jsonl")



_MAIN_KEYS = ("correct", "format")  # shown as accuracy and format


def format_table(records: Sequence[dict[str, Any]]) -> str:
  """A plain-text table: one row per record, the task's extra metrics as columns."""
  extras = sorted({k for r in records for k in r["metrics"] if k not in _MAIN_KEYS})
  head = ["task", "protocol", "search", "steps", "n", "accuracy", *extras, "format",
          "NFE/prompt", "scorer NFE", "tok/s", "seconds"]
  rows = [head]
  for r in records:
    tps = r.get("tokens_per_second")
    rows.append([r["task"], r["protocol"], search_label(r), str(r["steps"]), str(r["n"]),
                 f"{r['accuracy']:.4f}",
                 *(f"{r['metrics'][k]:.4f}" if k in r["metrics"] else "-" for k in extras),
                 f"{r['format_rate']:.4f}", f"{r.get('nfe_per_prompt', 0):.0f}",
                 f"{r.get('scorer_nfe_per_prompt', 0):.0f}",
                 "-" if tps is None else f"{tps:.1f}", f"{r['seconds']:.1f}"])
  widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
  return "\n".join("  ".join(c.rjust(w) if j > 1 else c.ljust(w)
                             for j, (c, w) in enumerate(zip(row, widths))).rstrip()
                   for row in rows)


def search_label(record: dict[str, Any]) -> str:
  s = record.get("search")
  if not s or s["search"] == "none":
    return "-"
  sc = record.get("search_config", {})
  if s["search"] == "best-of-n":
    return f"best-of-{s['k'] * s['n_live']}:{s['rewards']}"
  return f"mro:k{s['k']}:w{sc.get('group_steps')}:{s['select']}:{s['rewards']}"


def progress_line(record: dict[str, Any]) -> str:
  return (f"{record['task']} {record['protocol']} steps={record['steps']}: accuracy "
          f"{record['accuracy']:.4f} on {record['n']} in {record['seconds']:.1f}s")
