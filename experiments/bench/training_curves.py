"""The shipped models' training curves in one plot: training loss against step for each
task's mask predictor, from the metrics the runs logged (experiments/results/training/
default_<task>.metrics.jsonl); the validation accuracy behind each checkpoint choice is in
the same folder's default_<task>.md.

    python -m experiments.bench.training_curves [--out experiments/results/training/curves.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mro import paths
from mro.evaluation.plot import new_axes, save_axes
from mro.files import read_jsonl

RESULTS = paths.EXPERIMENTS / "results" / "training"
TASKS = {"sudoku": "Sudoku 4x4 (2.9M)", "countdown": "Countdown-3 (5.1M)",
         "arith": "arithmetic (5.1M)"}


def curves(results: Path = RESULTS) -> dict[str, list[tuple[int, float]]]:
  """{task: [(step, loss), ...]} for every task whose metrics file is there."""
  out = {}
  for task in TASKS:
    rows = [r for r in read_jsonl(results / f"default_{task}.metrics.jsonl") if "loss" in r]
    if rows:
      out[task] = [(r["step"], r["loss"]) for r in rows]
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default=str(RESULTS / "curves.png"))
  a = ap.parse_args()
  found = curves()
  if not found:
    raise SystemExit(f"no default_<task>.metrics.jsonl in {RESULTS}")
  fig, ax = new_axes()
  for task, points in found.items():
    steps, losses = zip(*points)
    ax.plot(steps, losses, label=TASKS[task], linewidth=1.2)
  ax.set_yscale("log")
  print(save_axes(fig, ax, a.out, xlabel="training step (batch 64)",
                  ylabel="masked-diffusion training loss",
                  title="the shipped models' training curves"))


if __name__ == "__main__":
  main()
