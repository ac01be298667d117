"""The RL comparison's table and learning curves, read from a finished (or running) sweep.

    python -m experiments.bench.rl_compare runs/sweeps/rl_compare_sudoku \
        [--out experiments/results/rl]

For every run of the sweep directory: the method and rewards (from its resolved
config.json), the best validation accuracy and its step, test accuracy at each evaluated
step count (eval.jsonl), optimizer steps, completions sampled (the rollout budget), and
the wall time per optimizer step (mean of metrics.jsonl's `seconds`: rollouts, rewards
and the train step; validation and compilation excluded). Writes OUT/NAME.md (the
table), OUT/NAME.jsonl (its rows) and OUT/NAME.png (validation accuracy vs optimizer
step, one line per run, starting at step 0 from the starting model's validation accuracy,
measured here once with the runs' own validation settings and cached in
SWEEP/base_validation.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from mro import config as exp_config
from mro.evaluation.plot import new_axes, save_axes
from mro.files import read_jsonl, write_atomic
from mro.method.finetuning.starting_model import load_start, validation


def run_row(workdir: Path) -> dict[str, Any] | None:
  """One run's numbers, or None for a directory that is not a run."""
  metrics = read_jsonl(workdir / "metrics.jsonl")
  evals = [e for e in read_jsonl(workdir / "eval.jsonl") if "accuracy" in e]
  if not metrics and not evals:
    return None
  row: dict[str, Any] = {"run": workdir.name, "done": (workdir / "done.json").exists()}
  config = workdir / "config.json"
  if config.exists():
    cfg = json.loads(config.read_text())
    rl = cfg["rl"]
    row.update(method=rl["method"], rewards=",".join(cfg["rewards"]["use"]) or "none",
               inner_steps=rl["inner_steps"])
  steps = [m for m in metrics if "loss" in m]
  if steps:
    rollouts = sum(1 for m in steps if "reward" in m)
    row.update(steps=steps[-1]["step"], rollout_batches=rollouts,
               seconds_per_step=float(np.mean([m["seconds"] for m in steps])))
    if config.exists():
      row["completions"] = rollouts * cfg["train"]["batch_size"]
    vals = [(m["step"], m["val_score"]) for m in metrics if "val_score" in m]
    if vals:
      best = max(vals, key=lambda v: v[1])
      row.update(best_val=best[1], best_step=best[0], curve=vals)
  row["test"] = {int(e["steps"]): e["accuracy"] for e in evals}
  row["n_test"] = evals[0]["n"] if evals else None
  return row


def base_validation(sweep_dir: Path, rows: list[dict[str, Any]]) -> float | None:
  """The starting model's validation accuracy under a training run's validation settings
  (what step 0 of every learning curve would have measured); cached in the sweep dir."""
  cache = sweep_dir / "base_validation.json"
  if cache.exists():
    return json.loads(cache.read_text())["score"]
  trained = [r for r in rows if r.get("curve")]
  if not trained:
    return None
  cfg = exp_config.load_resolved(sweep_dir / trained[0]["run"] / "config.json")
  cfg = dataclasses.replace(cfg, rewards=dataclasses.replace(cfg.rewards, use=("q",)))
  cfg, start = load_start(cfg)
  score = validation(cfg, start.sampler)(0, start.params)["score"]
  write_atomic(cache, json.dumps({"score": score, "model": str(start.model_dir)}) + "\n")
  return score


def table(rows: list[dict[str, Any]]) -> str:
  steps = sorted({s for r in rows for s in r["test"]}, reverse=True)
  head = ["run", "method", "rewards", "best val (step)", *[f"test @ {s}" for s in steps],
          "opt. steps", "completions", "s / opt. step"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    best = (f"{100 * r['best_val']:.1f} ({r['best_step']})" if "best_val" in r else "-")
    tests = [f"{100 * r['test'][s]:.1f}" if s in r["test"] else "-" for s in steps]
    per_step = f"{r['seconds_per_step']:.2f}" if "seconds_per_step" in r else "-"
    lines.append("| " + " | ".join([r["run"], r.get("method", "-"), r.get("rewards", "-"),
                                    best, *tests, str(r.get("steps", "-")),
                                    str(r.get("completions", "-")), per_step]) + " |")
  return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], out: Path, title: str, base: float | None) -> Path:
  fig, ax = new_axes()
  for r in rows:
    if r.get("curve"):
      xs, ys = zip(*([(0, base)] if base is not None else []), *r["curve"])
      ax.plot(xs, [100 * y for y in ys], marker="o", markersize=3, label=r["run"])
  return save_axes(fig, ax, out, xlabel="optimizer step", ylabel="validation accuracy (%)",
                   title=title)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("sweep_dir", type=Path)
  p.add_argument("--out", type=Path, default=Path("experiments/results/rl"))
  args = p.parse_args(argv)
  if not args.sweep_dir.is_dir():
    raise SystemExit(f"rl_compare: {args.sweep_dir} is not a sweep directory")
  rows = [r for d in sorted(args.sweep_dir.iterdir()) if d.is_dir()
          for r in [run_row(d)] if r is not None]
  order = {"base": 0, "mro-rl": 1, "diffu-grpo": 2, "coupled-grpo": 3, "wd1": 4}
  rows.sort(key=lambda r: (order.get(r["run"], 9), r["run"]))
  name = args.sweep_dir.name
  text = table(rows)
  write_atomic(args.out / f"{name}.md", text)
  write_atomic(args.out / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
  base = base_validation(args.sweep_dir, rows)
  plot(rows, args.out / f"{name}.png", f"{name}: validation accuracy", base)
  print(text, end="")
  if base is not None:
    print(f"\nstarting model's validation accuracy (step 0): {100 * base:.1f}")


if __name__ == "__main__":
  main()
