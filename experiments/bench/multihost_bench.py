"""What a second process costs: the same `mro train` as one process with 8 CPU devices
and as two processes with 4 each (the local sweep backend's multi-process mode,
`hosts: 2`), one (2, 2, 2) mesh in both.

    python -m experiments.bench.multihost_bench [--steps 50]

Prints, for each: the run's wall time (start-up, compile, steps, checkpoints, export),
the median seconds of a step (from metrics.jsonl), and how far the two runs' losses and
final weights are apart; and the load average of the machine before and after.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from safetensors.numpy import load_file

from mro import sweeps
from mro.files import read_jsonl

TINY = ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=2",
        "model.mlp_hidden=64", "tokenizer.vocab_size=64", "data.train_size=200",
        "data.max_prompt_len=16", "data.max_response_len=64", "train.batch_size=8",
        "train.warmup_steps=2", "train.log_every=1", "train.progress=false",
        "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"]


def run(tmp: Path, hosts: int, steps: int) -> tuple[float, Path]:
  devices = 8 // hosts
  spec = {"name": f"h{hosts}", "command": "train", "config": "tiny", "hosts": hosts,
          "root": str(tmp), "runs": [{"name": "t"}],
          "set": TINY + [f"train.steps={steps}", f"train.checkpoint_every={steps // 2}"],
          "env": {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
                  "JAX_PLATFORMS": "cpu"}}
  path = tmp / f"h{hosts}.yaml"
  path.write_text(yaml.safe_dump(spec))
  start = time.perf_counter()
  sweeps.run_sweep(path)
  return time.perf_counter() - start, tmp / f"h{hosts}" / "t"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=50)
  args = parser.parse_args()
  load = os.getloadavg()
  with tempfile.TemporaryDirectory() as tmp:
    results = {hosts: run(Path(tmp), hosts, args.steps) for hosts in (1, 2)}
    step_s = {h: float(np.median([r["seconds"] for r in read_jsonl(wd / "metrics.jsonl")]))
              for h, (_, wd) in results.items()}
    losses = {h: np.array([r["loss"] for r in read_jsonl(wd / "metrics.jsonl")])
              for h, (_, wd) in results.items()}
    weights = {h: load_file(wd / "model" / "model.safetensors")
               for h, (_, wd) in results.items()}
  for hosts, (wall, _) in results.items():
    print(f"{hosts} process(es): wall {wall:.1f} s, median step {step_s[hosts] * 1e3:.0f} ms")
  print(f"second process: wall +{results[2][0] - results[1][0]:.1f} s "
        f"({results[2][0] / results[1][0]:.2f}x), step x{step_s[2] / step_s[1]:.2f}")
  print(f"max loss relative difference {np.max(np.abs(losses[2] / losses[1] - 1)):.2e}, "
        f"max weight absolute difference "
        f"{max(np.max(np.abs(weights[2][k] - weights[1][k])) for k in weights[1]):.2e}")
  print(f"load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f} (2 cores)")


if __name__ == "__main__":
  main()
