"""Accuracy vs denoising steps (or forward passes, or seconds) from `mro eval` results
(JSON lines), as a PNG.

Reads only the results file: one line per distinct setting (`curve_label`), y = accuracy
in %, x = denoising steps on a log2 axis (an adaptive decoder, threshold rule or verified
cascade, has no fixed steps: it is drawn at its mean forward passes per prompt, with a
hollow marker and "at its forward passes" in its label), forward passes per prompt or
seconds. The MRO search's points of one setting lie on one line whatever their group
size w (written beside each point), unless two of them would share an x. The data a
curve was measured on is in its label (the file, or the generated split with its size).
When a file holds the same point twice (a rerun), the later line wins. Lines that are
not JSON objects (e.g. torn by a kill) are skipped.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mro.evaluation.protocols import get_protocol
from mro.evaluation.report import setting_label
from mro.files import read_jsonl
from mro.messages import quoted
from rewards.tasks import get_task


def read_results(path: str | Path) -> list[dict[str, Any]]:
  """The result records of a JSONL file (lines that do not parse are skipped)."""
  path = Path(path)
  if not path.is_file():
    raise ValueError(f"results file {path} does not exist")
  records = [r for r in read_jsonl(path) if {"accuracy", "task", "protocol"} <= set(r)]
  if not records:
    raise ValueError(f"{path} holds no `mro eval` result lines")
  return records


X_AXES = {  # --x: what a point's x is, and the axis title
    "steps": "denoising steps (log2)",
    "nfe": "mask-predictor forward passes per prompt (log2)",
    "seconds": "wall time of the setting, s (log)",
}


def adaptive(record: dict[str, Any]) -> bool:
  """A decoder whose steps are not fixed: a threshold or factor rule not kept to the steps
  (fixed_steps: the steps are its budget), or the cascade."""
  sampler = record.get("sampler") or {}
  rule = sampler.get("threshold") is not None or sampler.get("factor") is not None
  return ((rule and not sampler.get("fixed_steps"))
          or (record.get("search") or {}).get("method") == "cascade")


def _x(record: dict[str, Any], x: str = "steps") -> float:
  if x == "nfe" or (x == "steps" and adaptive(record) and "nfe_per_prompt" in record):
    return float(record["nfe_per_prompt"])
  if x == "seconds":
    return float(record["seconds"])
  return float(record.get("denoising_steps") or record["steps"])


def data_label(record: dict[str, Any]) -> str:
  """What a result was measured on: the data file's name, or the generated split (with
  Sudoku's number of blanks, which decides how hard it is)."""
  if record.get("data"):
    return Path(record["data"]).name
  split = f"{record.get('split') or 'test'} split"
  try:
    blanks = getattr(get_task(record["task"]), "blanks", None)
  except ValueError:  # a task this version does not know
    blanks = None
  return split + (f" ({blanks} blanks)" if blanks is not None else "")


# Sampler fields that vary along a curve (x) or are shown by the setting label.
_ALONG_CURVE = ("steps", "threshold", "fixed_steps", "correct_below", "correct_rows")


def curve_label(record: dict[str, Any], x: str = "steps") -> str:
  """Everything that makes a setting different except its steps: model, task, protocol,
  data file, the search and its rewards (report.setting_label), and every sampler
  option that differs from the protocol's (block, temperature, remasking, ...). Against
  cost (x = nfe or seconds) the thresholds of one setting lie along one curve too, and
  so do the accept levels of one cascade."""
  sampler = record.get("sampler") or {}
  if x != "steps" and sampler.get("threshold") is not None:
    plain = {**record, "sampler": {**sampler, "threshold": None, "fixed_steps": False}}
    return curve_label(plain, x) + ", threshold rule" + (
        " within the steps" if sampler.get("fixed_steps") else "")
  search = record.get("search") or {}
  if x != "steps" and search.get("method") == "cascade" and search.get("accept") is not None:
    # the accept levels of one cascade trade cost for accuracy: one curve
    return curve_label({**record, "search": {**search, "accept": None}}, x)
  points = search.get("search_points")
  if x != "steps" and points and search["group_steps"] * points == record["steps"]:
    # the default w follows the steps: one curve for every step count
    record = {**record, "search": {**search, "group_steps": f"steps/{points}",
                                   "search_points": None}}
  parts = [str(record.get("model", "?")), record["task"], record["protocol"],
           data_label(record)]
  try:
    base = dataclasses.asdict(get_protocol(record["protocol"], record["task"])
                              .sampler_config(rule=False))  # a rule is named in the label
  except ValueError:
    base = {}
  changed = [f"{k}={v}" for k, v in sorted(sampler.items())
             if k not in _ALONG_CURVE and k != "gen_length" and k in base and base[k] != v]
  if sampler.get("gen_length") not in (None, base.get("gen_length")):
    changed.insert(0, f"gen={sampler['gen_length']}")
  parts.append(setting_label(record) + (f" [{', '.join(changed)}]" if changed else "")
               + (ADAPTIVE_NOTE if x == "steps" and adaptive(record) else ""))
  return " · ".join(parts)


ADAPTIVE_NOTE = " (adaptive: at its forward passes)"


def group_size(record: dict[str, Any]) -> str | None:
  """`w=3` for an MRO search point (its group size), else None."""
  s = record.get("search") or {}
  return f"w={s['group_steps']}" if s.get("method") == "mro" else None


def series_labels(records: Sequence[dict[str, Any]], x: str = "steps") -> list[str]:
  """Each record's curve: `curve_label`, except that the MRO search's points that differ
  only in w share one line (w is then written beside each point), unless two of them
  would fall on the same x."""
  full = [curve_label(r, x) for r in records]
  merged = [re.sub(r" w=\S+", "", label, count=1) if group_size(r) else label
            for label, r in zip(full, records)]
  sizes: dict[str, dict[float, set]] = {}
  for label, r in zip(merged, records):
    sizes.setdefault(label, {}).setdefault(_x(r, x), set()).add(group_size(r))
  clash = {label for label, at in sizes.items() if any(len(w) > 1 for w in at.values())}
  return [f if m in clash else m for m, f in zip(merged, full)]


def curves(records: Sequence[dict[str, Any]],
           x: str = "steps") -> dict[str, list[tuple[float, float]]]:
  """label -> [(x, accuracy)] sorted by x (steps, nfe or seconds: X_AXES); one curve per
  distinct setting (`series_labels`), so a search and a plain run, or two data files,
  never merge."""
  return {label: [(px, acc) for px, (acc, _) in pts]
          for label, pts in _points(records, x).items()}


def _points(records, x) -> dict[str, list[tuple[float, tuple[float, str | None]]]]:
  """label -> [(x, (accuracy, note))] sorted by x; the note is the point's w where the
  label does not name it."""
  if x not in X_AXES:
    raise ValueError(f"x must be one of {tuple(X_AXES)}, got {quoted(x)}")
  points: dict[str, dict[float, tuple[float, str | None]]] = {}
  for label, r in zip(series_labels(records, x), records):
    note = group_size(r) if group_size(r) and " w=" not in label else None
    points.setdefault(label, {})[_x(r, x)] = (float(r["accuracy"]), note)
  return {label: sorted(p.items()) for label, p in points.items()}


def plot_results(results: str | Path | Sequence[dict[str, Any]], out: str | Path,
                 x: str = "steps") -> Path:
  """Draws accuracy vs `x` (steps, nfe: forward passes per prompt, or seconds: X_AXES)
  for a results file (or its records) into the PNG `out`."""
  from matplotlib.ticker import FixedLocator, ScalarFormatter  # deferred: loads to draw

  records = read_results(results) if isinstance(results, (str, Path)) else list(results)
  if not records:
    raise ValueError("no results to plot")
  out = Path(out)
  if out.suffix.lower() != ".png":
    raise ValueError(f"the plot is a PNG: give a .png path, got {out}")
  lines = _points(records, x)
  shared, short = split_labels(list(lines))
  fig, ax = new_axes((7.2, 4.4 + 0.22 * len(lines)))
  for label, pts in zip(short, lines.values()):
    xs = [px for px, _ in pts]
    ys = [100 * acc for _, (acc, _) in pts]
    hollow = ADAPTIVE_NOTE in label
    (line,) = ax.plot(xs, ys, marker="o", label=label,
                      markerfacecolor="none" if hollow else None)
    for px, py, (_, note) in zip(xs, ys, (p for _, p in pts)):
      if note:
        ax.annotate(note, (px, py), textcoords="offset points", xytext=(4, 4), fontsize=6,
                    color=line.get_color())
  ax.set_xscale("log", base=10 if x == "seconds" else 2)
  if x == "steps":
    ticks = sorted({px for pts in lines.values() for px, _ in pts})
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(FixedLocator([]))
  ax.xaxis.set_major_formatter(ScalarFormatter())
  ax.set_ylim(-2, 102)
  title = f"accuracy vs {X_AXES[x].split(' (')[0]}"
  return save_axes(fig, ax, out, xlabel=X_AXES[x], ylabel="accuracy %",
                   title=title + (f"\n{shared}" if shared else ""), legend_below=True)


def split_labels(labels: list[str]) -> tuple[str, list[str]]:
  """(the leading " · " parts every label shares, each label without them)."""
  parts = [label.split(" · ") for label in labels]
  n = 0
  while all(len(p) > n + 1 and p[n] == parts[0][n] for p in parts):
    n += 1
  return " · ".join(parts[0][:n]), [" · ".join(p[n:]) for p in parts]


def new_axes(figsize=(6.4, 4.4)):
  """(figure, axes) of a PNG plot, drawn off-screen (no display needed)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred: matplotlib
  from matplotlib.figure import Figure  # loads only when a plot is drawn
  fig = Figure(figsize=figsize, dpi=120)
  FigureCanvasAgg(fig)
  return fig, fig.add_subplot()


def save_axes(fig, ax, out: str | Path, *, xlabel: str, ylabel: str, title: str,
              legend_below: bool = False) -> Path:
  """Labels, grid and legend of `ax` (inside, or under the axes), and the figure written
  to the PNG `out`."""
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.grid(True, alpha=0.3)
  if legend_below:
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
  else:
    ax.legend(fontsize=8)
  fig.tight_layout()
  out = Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, format="png", bbox_inches="tight")
  return out
