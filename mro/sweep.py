"""`mro sweep FILE`: a grid of runs, each in its own workdir, resumable, summarised.

A sweep file (YAML, or Python defining `SWEEP = {...}`) holds:

    name: mro_sudoku                  # sweep directory: <root>/<name>/ (root: runs/sweeps)
    command: rl                       # train | reject-sample | rl | eval (evaluate only)
    config: rl_sudoku                 # shipped config name or YAML path
    set: [train.steps=200]            # overrides shared by every run
    grid: {mro.baseline: [none, group_mean], mro.n_opt: [1, 2]}   # cartesian product
    runs: [{name: paper, set: [mro.clip_eps=null]},               # extra named variants,
           {name: base, command: eval, model: default}]           # each with its own
                                      # command / config; an eval-only run names its model
    eval: {task: sudoku, steps: "L,L/2,L/4", model: best, limit: 256}
    concurrency: 1

Each run is one `mro` process (`concurrency` at a time). A run is finished when its
workdir holds `done.json`; relaunching the sweep skips finished runs and resumes the
others (training resumes from its checkpoints). The summary (summary.jsonl and a table
in summary.md) is built only by reading the workdirs. `command: eval` runs evaluate
`eval.model` (e.g. `default`) without training: the baseline rows of a table.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import runpy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

COMMANDS = ("train", "reject-sample", "rl", "eval")
_KEYS = {"name", "command", "config", "set", "grid", "runs", "eval", "concurrency", "root",
         "env"}


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  command: str
  config: str | None
  sets: tuple[str, ...]
  eval: dict | None
  workdir: Path
  model: str | None = None  # what an eval-only run evaluates


def load_sweep(path: str | Path) -> dict[str, Any]:
  path = Path(path)
  if not path.is_file():
    raise ValueError(f"sweep file {path} does not exist")
  if path.suffix == ".py":
    spec = runpy.run_path(str(path)).get("SWEEP")
  elif path.suffix in (".yaml", ".yml"):
    try:
      spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
      raise ValueError(f"{path} is not valid YAML: {e}") from e
  else:
    raise ValueError(f"sweep file {path} must be .yaml or .py")
  if not isinstance(spec, dict):
    raise ValueError(f"{path} must define a mapping (YAML) or SWEEP = {{...}} (Python)")
  unknown = sorted(set(spec) - _KEYS)
  if unknown:
    raise ValueError(f"unknown sweep key(s) {unknown}; known: {sorted(_KEYS)}")
  for key in ("name", "command"):
    if key not in spec:
      raise ValueError(f"sweep {path} needs a {key!r}")
  if spec["command"] not in COMMANDS:
    raise ValueError(f"sweep command must be one of {COMMANDS}, got {spec['command']!r}")
  if spec["command"] != "eval" and "config" not in spec:
    raise ValueError(f"sweep {path} needs a 'config' for command {spec['command']!r}")
  if spec["command"] == "eval" and not (spec.get("eval") or {}).get("model"):
    raise ValueError("a sweep with command 'eval' needs eval.model")
  return spec


def _slug(sets: list[str]) -> str:
  parts = [re.sub(r"[^A-Za-z0-9.=_-]+", "-", s.split(".", 1)[-1]).replace("=", "-")
           for s in sets]
  return "_".join(parts) or "base"


def expand(spec: dict[str, Any], root: str | Path | None = None) -> list[Run]:
  """Every run of the sweep: the grid's cartesian product plus the named variants."""
  base_dir = Path(root or spec.get("root") or "runs/sweeps") / spec["name"]
  shared = [str(s) for s in spec.get("set", [])]
  grid = spec.get("grid") or {}
  for key, values in grid.items():
    if "." not in key or not isinstance(values, list) or not values:
      raise ValueError(f"grid entry {key!r} must be section.key: [values...]")
  variants = []  # (name, sets, command, config)
  keys = list(grid)
  for combo in itertools.product(*(grid[k] for k in keys)) if grid else ():
    sets = [f"{k}={_yaml_scalar(v)}" for k, v in zip(keys, combo)]
    variants.append((_slug(sets), sets, spec["command"], spec.get("config"), None))
  if not grid and not spec.get("runs"):
    variants.append(("base", [], spec["command"], spec.get("config"), None))
  for entry in spec.get("runs") or []:
    if not isinstance(entry, dict) or "name" not in entry:
      raise ValueError(f"each entry of 'runs' needs a name, got {entry!r}")
    command = entry.get("command", spec["command"])
    if command not in COMMANDS:
      raise ValueError(f"run {entry['name']!r}: command must be one of {COMMANDS}")
    if command == "eval" and not (entry.get("model") or (spec.get("eval") or {}).get("model")):
      raise ValueError(f"eval-only run {entry['name']!r} needs a model")
    if command != "eval" and not entry.get("config", spec.get("config")):
      raise ValueError(f"run {entry['name']!r} needs a config for command {command!r}")
    variants.append((str(entry["name"]), [str(s) for s in entry.get("set", [])], command,
                     entry.get("config", spec.get("config")), entry.get("model")))
  names = [v[0] for v in variants]
  if len(set(names)) != len(names):
    raise ValueError(f"run names repeat in sweep {spec['name']!r}: {names}")
  return [Run(n, command, config, tuple(shared + sets) if command != "eval" else (),
              spec.get("eval"), base_dir / n, model)
          for n, sets, command, config, model in variants]


def _yaml_scalar(v) -> str:
  return "null" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))


def commands(run: Run) -> list[list[str]]:
  """The `mro` invocations of one run: training (unless eval-only), then evaluation."""
  cmds = []
  if run.command != "eval":
    cmd = [run.command, "--config", run.config, "--workdir", str(run.workdir)]
    for s in run.sets:
      cmd += ["--set", s]
    cmds.append(cmd)
  if run.eval:
    ev = dict(run.eval)
    model = ev.pop("model", "best")
    if run.command == "eval":
      model = run.model or model
    elif model in ("best", "model"):
      model = str(run.workdir / model)
    cmd = ["eval", "--model", str(model), "--out", str(run.workdir / "eval.jsonl")]
    for key, value in ev.items():
      cmd += [f"--{key.replace('_', '-')}", str(value)]
    cmds.append(cmd)
  return cmds


def is_done(run: Run) -> bool:
  return (run.workdir / "done.json").exists()


def launch(run: Run, env: dict[str, str]) -> subprocess.Popen:
  """Starts the run's commands in one shell process chain; writes done.json at the end."""
  run.workdir.mkdir(parents=True, exist_ok=True)
  # the eval step appends: a rerun after a crash must not duplicate rows
  (run.workdir / "eval.jsonl").unlink(missing_ok=True)
  (run.workdir / "eval.generations.jsonl").unlink(missing_ok=True)
  script = [[sys.executable, "-m", "mro.cli", *c] for c in commands(run)]
  done = json.dumps({"name": run.name, "sets": list(run.sets)})
  code = ("import subprocess, sys, pathlib\n"
          f"for c in {script!r}:\n"
          "  r = subprocess.run(c)\n"
          "  if r.returncode: sys.exit(r.returncode)\n"
          f"pathlib.Path({str(run.workdir / 'done.json')!r}).write_text({done!r})\n")
  log = open(run.workdir / "sweep.log", "a")
  return subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                          env=env)


def run_sweep(path: str | Path, *, root: str | Path | None = None,
              concurrency: int | None = None, dry_run: bool = False) -> list[dict[str, Any]]:
  spec = load_sweep(path)
  runs = expand(spec, root)
  limit = concurrency or int(spec.get("concurrency", 1))
  if limit < 1:
    raise ValueError(f"concurrency must be >= 1, got {limit}")
  env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": os.environ.get(
      "WANDB_MODE", "offline"), **{k: str(v) for k, v in (spec.get("env") or {}).items()}}
  todo = [r for r in runs if not is_done(r)]
  for r in runs:
    state = "done, skipped" if is_done(r) else "to run"
    print(f"[sweep {spec['name']}] {r.name}: {state}", file=sys.stderr)
  failed = []
  if not dry_run:
    active: list[tuple[Run, subprocess.Popen]] = []
    while todo or active:
      while todo and len(active) < limit:
        r = todo.pop(0)
        active.append((r, launch(r, env)))
      time.sleep(0.5)
      for r, p in list(active):
        if p.poll() is not None:
          active.remove((r, p))
          if p.returncode:
            failed.append(r.name)
          print(f"[sweep {spec['name']}] {r.name}: exit {p.returncode}", file=sys.stderr)
  rows = summarize(runs, Path(root or spec.get("root") or "runs/sweeps") / spec["name"])
  if failed:
    raise RuntimeError(f"sweep runs failed: {failed}; see their sweep.log")
  return rows


def summarize(runs: list[Run], sweep_dir: Path) -> list[dict[str, Any]]:
  """One row per run and evaluated setting, read from the workdirs."""
  rows = []
  for r in runs:
    base = {"run": r.name, "sets": list(r.sets), "done": is_done(r)}
    metrics = r.workdir / "metrics.jsonl"
    if metrics.exists():
      lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
      vals = [x["val_score"] for x in lines if "val_score" in x]
      base.update(steps=lines[-1]["step"] if lines else None,
                  best_val=max(vals) if vals else None)
    evals = r.workdir / "eval.jsonl"
    records = [json.loads(x) for x in evals.read_text().splitlines()] if evals.exists() else []
    if not records:
      rows.append(base)
    for e in records:
      rows.append({**base, "task": e["task"], "eval_steps": e["steps"], "n": e["n"],
                   "accuracy": e["accuracy"], "nfe_per_prompt": e.get("nfe_per_prompt")})
  sweep_dir.mkdir(parents=True, exist_ok=True)
  (sweep_dir / "summary.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
  (sweep_dir / "summary.md").write_text(format_summary(rows))
  return rows


def format_summary(rows: list[dict[str, Any]]) -> str:
  """Markdown table: one row per run, accuracy per evaluated step count as columns."""
  steps = sorted({r["eval_steps"] for r in rows if "eval_steps" in r}, reverse=True)
  by_run: dict[str, dict] = {}
  for r in rows:
    entry = by_run.setdefault(r["run"], {"run": r["run"], "best_val": r.get("best_val")})
    if "eval_steps" in r:
      entry[r["eval_steps"]] = r["accuracy"]
  head = ["run", "best val"] + [f"steps {s}" for s in steps]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  fmt = lambda v: "-" if v is None else f"{100 * v:.1f}"
  for e in by_run.values():
    lines.append("| " + " | ".join([e["run"], fmt(e["best_val"])]
                                   + [fmt(e.get(s)) for s in steps]) + " |")
  return "\n".join(lines) + "\n"
