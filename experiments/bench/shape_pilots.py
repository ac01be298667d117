"""Model-shape pilots at equal wall time: fewer, wider layers against more, narrower ones,
and float32 against bfloat16 matmuls, for one training config.

    python -m experiments.bench.shape_pilots default_arith --seconds 900 \
        [--shapes d256x6,d320x4,d192x10,d256x6-bf16] [--limit 256] [--out runs/pilots_arith]

Equal wall time is taken on a quiet machine, not on whatever the machine does while the
pilots train: first every shape's compiled train step is timed in this one process
(`train_bench.measure`, median of `--timing-steps`), then each pilot trains for
`seconds / its step time` steps with the config's schedule scaled to that length (warmup
the same fraction, the cosine ending at the last step: what a real run of that budget
would do), so the pilots may train one after the other on a busy machine and still each
get the same budget. The timings are kept in OUT/timing.json: a rerun resumes the
unfinished pilots (`mro train` resumes a workdir) with the same step counts, and skips
the evaluations already recorded. Each pilot's final model is evaluated greedily at
steps = L on the validation split (the fixed schedule); the table goes to OUT/pilots.md
and stdout, its rows to OUT/pilots.jsonl.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from experiments.bench.train_bench import measure
from mro import config as exp_config
from mro.files import read_jsonl, write_atomic, write_json_atomic
from mro.training.workdir import read_metrics

# name -> model settings, with the task tokenizers' vocabularies: d256x6 (the shipped
# Countdown and arithmetic shape, 5.1M) against fewer, wider layers at about the same size
# (d320x4, 5.3M) and a wider, larger one (d384x4, 7.7M), and more, narrower layers (d192x10,
# 4.8M).
SHAPES = {
    "d256x6": ("model.d_model=256", "model.n_layers=6", "model.n_heads=8", "model.n_kv_heads=8",
               "model.mlp_hidden=768"),
    "d320x4": ("model.d_model=320", "model.n_layers=4", "model.n_heads=8", "model.n_kv_heads=8",
               "model.mlp_hidden=960"),
    "d384x4": ("model.d_model=384", "model.n_layers=4", "model.n_heads=8", "model.n_kv_heads=8",
               "model.mlp_hidden=1152"),
    "d192x10": ("model.d_model=192", "model.n_layers=10", "model.n_heads=6",
                "model.n_kv_heads=6", "model.mlp_hidden=576"),
}
BF16 = "-bf16"  # a shape name with this suffix trains with bfloat16 matmuls


def shape_sets(name: str) -> list[str]:
  base = name.removesuffix(BF16)
  if base not in SHAPES:
    raise ValueError(f"unknown shape {name!r}; known: {', '.join(SHAPES)} (each also "
                     f"with {BF16})")
  dtype = "bfloat16" if name.endswith(BF16) else "float32"
  return [*SHAPES[base], f"model.compute_dtype={dtype}"]


def pilot_sets(cfg, steps: int) -> list[str]:
  """The config's schedule scaled to `steps`: the same warmup fraction, a checkpoint every
  quarter (so an interrupted pilot loses little), a log line every 1% of the run."""
  warmup = max(1, round(cfg.train.warmup_steps * steps / cfg.train.steps))
  return [f"train.steps={steps}", f"train.warmup_steps={warmup}",
          f"train.checkpoint_every={max(1, steps // 4)}",
          f"train.log_every={max(1, steps // 100)}", "train.progress=false"]


def timings(config: str, shapes: list[str], batch: int, steps: int, path: Path) -> dict:
  """{shape: {"step_s", "params_m"}}, measured now for the shapes not yet in `path`."""
  known = json.loads(path.read_text()) if path.exists() else {}
  todo = [s for s in shapes if s not in known]
  with tempfile.TemporaryDirectory(prefix="shape_pilots_") as tmp:
    for name in todo:
      r = measure(config, batch, steps, tmp, sets=shape_sets(name))
      known[name] = {"step_s": r["step_s"], "params_m": r["params_m"]}
      print(f"{name}: {r['params_m']:.2f}M parameters, {r['step_s']:.3f} s per step",
            flush=True)
  write_json_atomic(path, known)
  return known


def run(cmd: list[str], log: Path) -> None:
  with log.open("a") as f:
    code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
  if code != 0:
    sys.exit(f"{' '.join(cmd)} failed (exit {code}); log {log}")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("config", help="a training config (experiments/configs/NAME.yaml)")
  ap.add_argument("--seconds", type=float, required=True,
                  help="training budget of each pilot on a quiet machine")
  ap.add_argument("--shapes", default="d256x6,d320x4,d192x10,d256x6-bf16")
  ap.add_argument("--limit", type=int, default=256, help="validation examples")
  ap.add_argument("--timing-steps", type=int, default=6)
  ap.add_argument("--out", help="default runs/pilots_CONFIG")
  a = ap.parse_args()
  shapes = a.shapes.split(",")
  for name in shapes:
    shape_sets(name)  # an unknown shape is refused before anything runs
  if a.seconds <= 0:
    ap.error("--seconds must be positive")
  cfg = exp_config.load_config(a.config)
  out = Path(a.out or f"runs/pilots_{a.config}")
  out.mkdir(parents=True, exist_ok=True)
  timing = timings(a.config, shapes, cfg.train.batch_size, a.timing_steps, out / "timing.json")
  mro = [sys.executable, "-m", "mro.cli"]
  rows = []
  for name in shapes:
    steps = max(1, int(a.seconds / timing[name]["step_s"]))
    workdir = out / name
    sets = [*shape_sets(name), *pilot_sets(cfg, steps)]
    run([*mro, "train", "--config", a.config, "--workdir", str(workdir),
         *[x for s in sets for x in ("--set", s)]], out / f"{name}.log")
    results = out / "pilots.jsonl"
    run([*mro, "eval", "--model", str(workdir), "--task", cfg.data.task, "--split",
         "validation", "--limit", str(a.limit), "--steps", "L", "--threshold", "none",
         "--out", str(results)], out / f"{name}.log")
    evals = [r for r in read_jsonl(results)
             if Path(r.get("model_path", "")).name == name and "accuracy" in r]
    metrics = read_metrics(workdir / "metrics.jsonl")
    tail = [m["loss"] for m in metrics[-max(1, len(metrics) // 10):]]
    scores = {"accuracy": evals[-1]["accuracy"]} if evals else {}
    scores.update({k: v for k, v in (evals[-1].get("metrics") or {}).items()
                   if k not in ("correct", "format", "answered")} if evals else {})
    rows.append({"shape": name, **timing[name], "steps": steps,
                 "train_loss_last_tenth": sum(tail) / len(tail), "validation": scores})
  names = sorted({k for r in rows for k in r["validation"]}, key=lambda k: k != "accuracy")
  lines = [f"Shape pilots of `{a.config}` at {a.seconds:g} s each on a quiet machine "
           f"(validation, {a.limit} examples, steps = L, fixed schedule)", "",
           "| shape | parameters | s / step (quiet) | steps | train loss, last tenth | "
           + " | ".join(f"validation {k}" for k in names) + " |",
           "|---|---|---|---|---|" + "---|" * len(names)]
  for r in rows:
    cells = [f"{100 * r['validation'][k]:.1f}%" if k in r["validation"] else "-" for k in names]
    lines.append(f"| {r['shape']} | {r['params_m']:.2f}M | {r['step_s']:.3f} | {r['steps']} | "
                 f"{r['train_loss_last_tenth']:.4f} | " + " | ".join(cells) + " |")
  table = "\n".join(lines) + "\n"
  print(table)
  write_atomic(out / "pilots.md", table)
  write_atomic(out / "pilots_table.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
  main()
