"""The Ray backend's cost against the local backend, on this machine.

    python -m experiments.bench.ray_sweep_bench [--runs 4] [--cpus 2]

Two sweeps, each run by both backends with the same parallelism (local: concurrency
CPUS; Ray: a fresh local cluster of CPUS CPUs, one per run): RUNS no-op script runs (a
run's cost is then only the backend's), and RUNS tiny `mro train` runs (the test suite's
tiny config, 200 steps). Prints wall times, the cluster's start-up, and the overhead per
run: (Ray wall - local wall) / RUNS x CPUS, i.e. per run-slot.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import yaml

from mro import sweeps

TINY = ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=2",
        "model.mlp_hidden=64", "tokenizer.vocab_size=64", "data.train_size=200",
        "data.max_prompt_len=16", "data.max_response_len=64", "train.steps=200",
        "train.batch_size=8", "train.warmup_steps=2", "train.checkpoint_every=20",
        "train.log_every=1", "train.progress=false"]


def sweep_file(tmp: Path, kind: str, backend: str, runs: int, cpus: int) -> Path:
  spec = {"name": kind, "backend": backend, "root": str(tmp / backend), "concurrency": cpus,
          "ray": {"resources": {"CPU": 1}}}
  if kind == "noop":
    (tmp / "noop.py").write_text("import sys\n")
    spec.update(command="script", script=str(tmp / "noop.py"),
                runs=[{"name": f"r{i}"} for i in range(runs)])
  else:
    spec.update(command="train", config="tiny", set=TINY,
                grid={"train.lr": [round(0.001 * (i + 1), 4) for i in range(runs)]})
  path = tmp / f"{kind}-{backend}.yaml"
  path.write_text(yaml.safe_dump(spec))
  return path


def timed_sweep(path: Path) -> float:
  start = time.monotonic()
  with contextlib.redirect_stderr(io.StringIO()):
    sweeps.run_sweep(path)
  return time.monotonic() - start


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--runs", type=int, default=4)
  parser.add_argument("--cpus", type=int, default=2)
  args = parser.parse_args()
  import ray  # optional dependency (pip install -e '.[ray]')
  tmp = Path(tempfile.mkdtemp(prefix="bench_ray_"))
  start = time.monotonic()
  ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
           object_store_memory=100 * 2**20)
  print(f"ray.init (a local {args.cpus}-CPU cluster): {time.monotonic() - start:.1f} s")
  print(f"\n| sweep ({args.runs} runs, {args.cpus} at a time) | local | Ray | overhead per run |")
  print("|---|---|---|---|")
  for kind in ("noop", "train"):
    local = timed_sweep(sweep_file(tmp, kind, "local", args.runs, args.cpus))
    on_ray = timed_sweep(sweep_file(tmp, kind, "ray", args.runs, args.cpus))
    per_run = (on_ray - local) / args.runs * args.cpus
    print(f"| {kind} | {local:.1f} s | {on_ray:.1f} s | {per_run:+.1f} s |", flush=True)
  ray.shutdown()


if __name__ == "__main__":
  main()
