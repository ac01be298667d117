"""Provenance of a shipped model: what made it and what it measured, next to its weights.

    python -m experiments.provenance MODEL_DIR --config CONFIG --command "mro train ..."
        [--metrics runs/x/metrics.jsonl | --steps N] [--eval RESULTS.jsonl ...]
        [--commit REV | --commit unknown] [--note TEXT]

writes MODEL_DIR/provenance.json:
  config        the experiment config it was trained from (a name under experiments/configs
                or a file), as committed
  command       the command that trained it (and converted it, if it was)
  commit        the git commit of the code that trained it (null: not recorded)
  steps, final_loss   the last record of the run's metrics (or the configured steps and
                a null loss when the metrics were not kept)
  weights_sha256      of model.safetensors (tests/test_provenance.py checks it)
  evals         the accuracy records it ships with (those of the `--eval` files whose
                model_path is this model, or that name none): split, data, steps,
                search, n, accuracy
  note          what is not known, or how the record was reconstructed (optional)

Only repository-relative paths are stored. Nothing is guessed: what the repository does
not record is null and said so in `note`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from mro import paths

EVAL_KEYS = ("task", "split", "data", "protocol", "search", "n", "accuracy", "nfe_per_prompt",
             "groups")


def sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def eval_summary(record: dict) -> dict:
  out = {k: record[k] for k in EVAL_KEYS if k in record}
  out["data"] = paths.relative(out.get("data"))
  sampler = record.get("sampler") or {}
  out["sampler"] = {k: sampler.get(k) for k in ("gen_length", "steps", "block_length",
                                                "threshold", "fixed_steps") if k in sampler}
  return out


def last_metrics(path: Path) -> dict:
  lines = [line for line in path.read_text().splitlines() if line.strip()]
  if not lines:
    raise ValueError(f"{path} holds no metrics record")
  return json.loads(lines[-1])


def of_model(record: dict, model_dir: Path) -> bool:
  """Whether an eval record was measured on `model_dir` (a record naming no model path,
  such as a sweep summary's, is taken as given)."""
  where = record.get("model_path")
  return where is None or Path(where).parts[-2:] == model_dir.resolve().parts[-2:]


def build(model_dir: Path, config: str, command: str, commit: str | None,
          metrics: Path | None, evals: list[Path], steps: int | None = None,
          note: str | None = None) -> dict:
  weights = model_dir / "model.safetensors"
  if not weights.is_file():
    raise ValueError(f"{model_dir} holds no model.safetensors")
  record = {"config": config, "command": command, "commit": commit,
            "weights_sha256": sha256(weights), "steps": steps, "final_loss": None}
  if metrics is not None:
    last = last_metrics(metrics)
    record.update(steps=last.get("step"), final_loss=last.get("loss"))
  if note:
    record["note"] = note
  records = [json.loads(line) for path in evals for line in path.read_text().splitlines()
             if line.strip()]
  record["evals"] = [eval_summary(r) for r in records if of_model(r, model_dir)]
  return record


def main(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("model_dir", type=Path)
  ap.add_argument("--config", required=True, help="config name or file it was trained from")
  ap.add_argument("--command", required=True, help="the command that made it")
  ap.add_argument("--metrics", type=Path, help="the training run's metrics.jsonl")
  ap.add_argument("--eval", type=Path, action="append", default=[],
                  help="mro eval results (JSONL) measured on this model; repeatable")
  ap.add_argument("--steps", type=int,
                  help="the run's steps when its metrics were not kept (final_loss: null)")
  ap.add_argument("--commit", help="git commit of the training code (default: HEAD; "
                                   "'unknown': not recorded, stored as null)")
  ap.add_argument("--note", help="what is not known, or how this record was made")
  a = ap.parse_args(argv)
  commit = None if a.commit == "unknown" else a.commit or paths.git_commit()
  record = build(a.model_dir, a.config, a.command, commit, a.metrics, a.eval, a.steps,
                 a.note)
  out = a.model_dir / "provenance.json"
  out.write_text(json.dumps(record, indent=2) + "\n")
  print(f"wrote {paths.relative(out)}")


if __name__ == "__main__":
  main()
