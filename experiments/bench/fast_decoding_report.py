"""Tables and the accuracy / wall-time frontier from fast_decoding_accuracy results.

    python -m experiments.bench.fast_decoding_report RESULTS.jsonl [PNG]

prints the tables and draws the accuracy / wall-time frontier (default: frontier.png
next to the results).

The latest record of each (task, shots, setting) counts; the reference of a task is its
"exact L" setting (exact decoding, one token per step, one block).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REFERENCE = "exact L"


def latest(path: str | Path) -> dict[tuple[str, int], dict[str, dict]]:
  """(task, shots) -> setting -> its latest record, in first-seen setting order."""
  groups: dict[tuple[str, int], dict[str, dict]] = {}
  for line in Path(path).read_text().splitlines():
    try:
      r = json.loads(line)
    except json.JSONDecodeError:
      continue
    groups.setdefault((r["task"], r.get("shots", 0)), {})[r["setting"]] = r
  return groups


def _describe(r: dict) -> str:
  s = r["sampler"]
  rule = (f"thr {s['threshold']}" if s.get("threshold") else
          f"factor {s['factor']}" if s.get("factor") else f"{s['steps']} steps")
  block = "one block" if s["block_length"] == s["gen_length"] else f"block {s['block_length']}"
  extra = ", EOS stop" if s.get("stop_at_eos") else ""
  return f"{rule}, {block}, cache {s.get('cache', 'none')}{extra}"


def _compare(r: dict, ref: dict) -> tuple[float, int, int, float]:
  delta = 100 * (r["accuracy"] - ref["accuracy"])
  lost = sum(a and not b for a, b in zip(ref["correct"], r["correct"]))
  gained = sum(b and not a for a, b in zip(ref["correct"], r["correct"]))
  return delta, lost, gained, ref["seconds"] / r["seconds"]


def task_table(task: str, shots: int, rows: dict[str, dict]) -> str:
  ref = rows.get(REFERENCE) or next(iter(rows.values()))
  head = (f"{task}{f' ({shots}-shot prompts)' if shots else ''}: n = {ref['n']}, gen "
          f"{ref['sampler']['gen_length']}, prompt width {ref['prompt_width']}, batch "
          f"{ref['batch_size']}; speedup = wall time of exact L / wall time")
  out = [head, "", "| setting | what | accuracy % | Δ pts | lost / gained | mean NFE | "
         "tokens/s | seconds | speedup |", "|---|---|---|---|---|---|---|---|---|"]
  for label, r in rows.items():
    delta, lost, gained, speed = _compare(r, ref)
    out.append(f"| {label} | {_describe(r)} | {100 * r['accuracy']:.1f} | {delta:+.1f} | "
               f"{lost} / {gained} | {r['mean_nfe']:.1f} | {r['tokens_per_second']:.0f} | "
               f"{r['seconds']:.1f} | {speed:.2f}x |")
  return "\n".join(out)


def summary_table(groups: dict[tuple[str, int], dict[str, dict]]) -> str:
  """One row per setting: Δ accuracy and speedup on every task; ok = >= 4x and >= -1 pt
  on every task."""
  keys = list(groups)
  labels = list(dict.fromkeys(label for rows in groups.values() for label in rows))
  names = [f"{t}{f' {s}-shot' if s else ''}" for t, s in keys]
  out = ["| setting | " + " | ".join(f"{n}: Δ pts, speedup" for n in names) +
         " | >= 4x and >= -1 pt everywhere |", "|---|" + "---|" * (len(keys) + 1)]
  for label in labels:
    cells, ok = [], True
    for key in keys:
      rows = groups[key]
      if label not in rows or REFERENCE not in rows:
        cells.append("-")
        ok = False
        continue
      delta, _, _, speed = _compare(rows[label], rows[REFERENCE])
      ok &= delta >= -1.0 and speed >= 4.0
      cells.append(f"{delta:+.1f}, {speed:.1f}x")
    out.append(f"| {label} | " + " | ".join(cells) + f" | {'yes' if ok else ''} |")
  return "\n".join(out)


def tables(path: str | Path) -> str:
  groups = latest(path)
  parts = [task_table(t, s, rows) for (t, s), rows in groups.items()]
  return "\n\n".join(parts + ["Summary (Δ accuracy vs exact L, wall-time speedup):\n\n"
                              + summary_table(groups)])


def _family(label: str) -> tuple[str, str]:
  if label.startswith("b8"):
    return "block 8", "tab:purple"
  if "cache" in label:
    return "one block + cache", "tab:green"
  if "thr" in label or "factor" in label:
    return "one block, parallel", "tab:orange"
  if label == "fast":
    return "fast()", "tab:red"
  return "exact (steps)", "tab:blue"


def plot_frontier(path: str | Path, png: str | Path) -> Path:
  """Accuracy vs wall time, one panel per task, one marker per setting."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred: tables need none
  from matplotlib.figure import Figure  # deferred: matplotlib loads only to draw
  groups = latest(path)
  fig = Figure(figsize=(5.2 * len(groups), 4.6), dpi=110)
  FigureCanvasAgg(fig)
  for i, ((task, shots), rows) in enumerate(groups.items()):
    ax = fig.add_subplot(1, len(groups), i + 1)
    seen = set()
    for label, r in rows.items():
      family, color = _family(label)
      ax.scatter(r["seconds"], 100 * r["accuracy"], color=color, s=28,
                 label=None if family in seen else family,
                 marker="*" if label in (REFERENCE, "fast") else "o")
      seen.add(family)
      ax.annotate(label, (r["seconds"], 100 * r["accuracy"]), fontsize=6,
                  xytext=(3, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("wall time of the n examples, s (log)")
    ax.set_ylabel("accuracy %")
    ax.set_title(f"{task}{f' ({shots}-shot)' if shots else ''}, n = {r['n']}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  Path(png).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(png, format="png")
  return Path(png)


if __name__ == "__main__":
  results = sys.argv[1]
  print(tables(results))
  png = sys.argv[2] if len(sys.argv) > 2 else Path(results).with_name("frontier.png")
  print(f"\nfrontier plot: {plot_frontier(results, png)}")
