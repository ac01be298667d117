"""Provenance of a shipped model: what made it and what it measured, next to its weights.

    python -m experiments.provenance MODEL_DIR --config CONFIG --command "mro train ..."
        [--metrics runs/x/metrics.jsonl] [--eval RESULTS.jsonl ...] [--commit REV]

writes MODEL_DIR/provenance.json:
  config        the experiment config it was trained from (a name under experiments/configs
                or a file), as committed
  command       the command that trained it (and converted it, if it was)
  commit        the git commit of the code that trained it
  steps, final_loss   the last record of the run's metrics
  weights_sha256      of model.safetensors (tests/test_shipped_models.py checks it)
  evals         the accuracy records it ships with: split, data, steps, search, n, accuracy

Only repository-relative paths are stored.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL_KEYS = ("task", "split", "data", "protocol", "search", "n", "accuracy", "nfe_per_prompt",
             "groups")


def sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def relative(path: str | Path | None) -> str | None:
  """`path` relative to the repository root when it lies inside it."""
  if path is None:
    return None
  p = Path(path).resolve()
  return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)


def eval_summary(record: dict) -> dict:
  out = {k: record[k] for k in EVAL_KEYS if k in record}
  out["data"] = relative(out.get("data"))
  sampler = record.get("sampler") or {}
  out["sampler"] = {k: sampler.get(k) for k in ("gen_length", "steps", "block_length",
                                                "threshold") if k in sampler}
  return out


def last_metrics(path: Path) -> dict:
  lines = [line for line in path.read_text().splitlines() if line.strip()]
  if not lines:
    raise ValueError(f"{path} holds no metrics record")
  return json.loads(lines[-1])


def build(model_dir: Path, config: str, command: str, commit: str,
          metrics: Path | None, evals: list[Path]) -> dict:
  weights = model_dir / "model.safetensors"
  if not weights.is_file():
    raise ValueError(f"{model_dir} holds no model.safetensors")
  record = {"config": config, "command": command, "commit": commit,
            "weights_sha256": sha256(weights)}
  if metrics is not None:
    last = last_metrics(metrics)
    record.update(steps=last.get("step"), final_loss=last.get("loss"))
  record["evals"] = [eval_summary(json.loads(line)) for path in evals
                     for line in path.read_text().splitlines() if line.strip()]
  return record


def main(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("model_dir", type=Path)
  ap.add_argument("--config", required=True, help="config name or file it was trained from")
  ap.add_argument("--command", required=True, help="the command that made it")
  ap.add_argument("--metrics", type=Path, help="the training run's metrics.jsonl")
  ap.add_argument("--eval", type=Path, action="append", default=[],
                  help="mro eval results (JSONL) measured on this model; repeatable")
  ap.add_argument("--commit", help="git commit of the training code (default: HEAD)")
  a = ap.parse_args(argv)
  commit = a.commit or subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True,
                                      capture_output=True, text=True).stdout.strip()
  record = build(a.model_dir, a.config, a.command, commit, a.metrics, a.eval)
  out = a.model_dir / "provenance.json"
  out.write_text(json.dumps(record, indent=2) + "\n")
  print(f"wrote {relative(out)}")


if __name__ == "__main__":
  main()
