"""Accuracy vs denoising steps from `mro eval` results (JSON lines), as a PNG.

Reads only the results file: one line per (model, task, protocol), x = denoising steps on
a log2 axis (the sampler's steps; the mean steps taken in threshold mode), y = accuracy.
When a file holds the same point twice (a rerun), the later line wins. Lines that are
not JSON objects (e.g. torn by a kill) are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mro.files import read_jsonl


def read_results(path: str | Path) -> list[dict[str, Any]]:
  """The result records of a JSONL file (lines that do not parse are skipped)."""
  path = Path(path)
  if not path.is_file():
    raise ValueError(f"results file {path} does not exist")
  records = [r for r in read_jsonl(path) if {"accuracy", "task", "protocol"} <= set(r)]
  if not records:
    raise ValueError(f"{path} holds no `mro eval` result lines")
  return records


def _x(record: dict[str, Any]) -> float:
  return float(record.get("denoising_steps") or record["steps"])


def curves(records: Sequence[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
  """label -> [(steps, accuracy)] sorted by steps; one label per (model, task, protocol)."""
  points: dict[str, dict[float, float]] = {}
  for r in records:
    label = f"{r.get('model', '?')} · {r['task']} · {r['protocol']}"
    points.setdefault(label, {})[_x(r)] = float(r["accuracy"])
  return {label: sorted(p.items()) for label, p in points.items()}


def plot_results(results: str | Path | Sequence[dict[str, Any]], out: str | Path) -> Path:
  """Draws accuracy vs steps for a results file (or its records) into the PNG `out`."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from matplotlib.ticker import FixedLocator, ScalarFormatter

  records = read_results(results) if isinstance(results, (str, Path)) else list(results)
  if not records:
    raise ValueError("no results to plot")
  out = Path(out)
  if out.suffix.lower() != ".png":
    raise ValueError(f"the plot is a PNG: give a .png path, got {out}")
  lines = curves(records)
  fig = Figure(figsize=(6.4, 4.4), dpi=120)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  for label, pts in lines.items():
    xs, ys = zip(*pts)
    ax.plot(xs, ys, marker="o", label=label)
  ax.set_xscale("log", base=2)
  ticks = sorted({x for pts in lines.values() for x, _ in pts})
  ax.xaxis.set_major_locator(FixedLocator(ticks))
  ax.xaxis.set_major_formatter(ScalarFormatter())
  ax.xaxis.set_minor_locator(FixedLocator([]))
  ax.set_ylim(-0.02, 1.02)
  ax.set_xlabel("denoising steps (log2)")
  ax.set_ylabel("accuracy")
  ax.set_title("accuracy vs denoising steps")
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, format="png")
  return out
