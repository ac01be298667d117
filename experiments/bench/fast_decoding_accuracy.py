"""Fast decoding, accuracy vs speed on the shipped models: fewer steps, parallel commits
(threshold, factor rule), KV caches, smaller blocks and the EOS stop, against exact
decoding at L steps.

    python -m experiments.bench.fast_decoding_accuracy                   # all tasks, n = 256
    python -m experiments.bench.fast_decoding_accuracy --tasks arith --shots 2 --out F.jsonl
    python -m experiments.bench.fast_decoding_accuracy --table F.jsonl   # tables + plot only

Models: `experiments/models/default/<task>` (greedy, compact prompts, the test splits:
Sudoku 12 blanks from experiments/data/sudoku_test_12blanks.csv, Countdown-3, arithmetic).
The shipped models decode the response as ONE block (block_length = gen_length); with one
block a prefix and a dual cache are the same thing (the prompt's K/V, filled at the first
step). Caches across blocks need several blocks, so the grid also runs block_length 8.

Every setting is compiled ahead of time (not timed) and then times its batches (all
examples, `--batch-size` rows per call, row i keyed by example index i); all settings of a
task run in this one process, so their ratios are measured together. `--shots k` prepends
k solved training examples to every prompt (the prompt-heavy variant; the model's
max_seq_len is raised to fit, beyond what the shipped models were trained on).
Each setting appends one JSON line to `--out`; the markdown tables and the accuracy/wall
time frontier (PNG) are made from that file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np

from experiments.bench.fast_decoding_report import plot_frontier, tables
from models import checkpoints
from models.tokenizers import load_tokenizer, truncate_at_eos
from mro.loading import resolve_model
from mro.sampling import sampler as S
from mro.sampling.schedule import SamplerConfig, fast
from mro.sampling.textgen import TextSampler
from rewards.tasks import get_task

GEN_LENGTH = {"sudoku": 24, "countdown": 48, "arith": 64}  # the compact protocol's
DATA = {"sudoku": "experiments/data/sudoku_test_12blanks.csv"}

# label -> (steps as a fraction of L, SamplerConfig overrides); block None = one block.
SETTINGS: dict[str, tuple[float, dict]] = {
    "exact L": (1, {}),
    "exact L/2": (1 / 2, {}),
    "exact L/4": (1 / 4, {}),
    "cache L": (1, dict(cache="dual")),
    "cache L/2": (1 / 2, dict(cache="dual")),
    "thr 0.99": (1, dict(threshold=0.99)),
    "thr 0.9": (1, dict(threshold=0.9)),
    "thr 0.7": (1, dict(threshold=0.7)),
    "thr 0.5": (1, dict(threshold=0.5)),
    "factor 0.5": (1, dict(factor=0.5)),
    "factor 1": (1, dict(factor=1.0)),
    "cache thr 0.99": (1, dict(cache="dual", threshold=0.99)),
    "cache thr 0.9": (1, dict(cache="dual", threshold=0.9)),
    "cache thr 0.7": (1, dict(cache="dual", threshold=0.7)),
    "cache thr 0.5": (1, dict(cache="dual", threshold=0.5)),
    "cache factor 0.5": (1, dict(cache="dual", factor=0.5)),
    "cache factor 1": (1, dict(cache="dual", factor=1.0)),
    "cache thr 0.9 eos": (1, dict(cache="dual", threshold=0.9, stop_at_eos=True)),
    "b8 exact L": (1, dict(block_length=8)),
    "b8 prefix L": (1, dict(block_length=8, cache="prefix")),
    "b8 dual L": (1, dict(block_length=8, cache="dual")),
    "b8 thr 0.9": (1, dict(block_length=8, threshold=0.9)),
    "b8 prefix thr 0.9": (1, dict(block_length=8, cache="prefix", threshold=0.9)),
    "b8 dual thr 0.9": (1, dict(block_length=8, cache="dual", threshold=0.9)),
    "b8 dual thr 0.9 eos": (1, dict(block_length=8, cache="dual", threshold=0.9,
                                    stop_at_eos=True)),
    "fast": (1, {}),  # mro.sampling.schedule.fast applied to the task's exact-L config
}


def sampler_config(label: str, gen_length: int) -> SamplerConfig:
  frac, overrides = SETTINGS[label]
  base = SamplerConfig(gen_length=gen_length, steps=int(gen_length * frac),
                       block_length=gen_length)
  if label == "fast":
    return fast(base)
  block = overrides.get("block_length", gen_length)
  steps = int(gen_length * frac)
  steps -= steps % (gen_length // block)
  return dataclasses.replace(base, steps=steps, **overrides)


def few_shot_prefix(task, shots: int) -> str:
  """k solved training examples, prompt and target run together, as in the training data."""
  return "".join(ex.prompt + ex.target for ex in task.examples("train", limit=shots, seed=1))


def load(task_name: str, shots: int):
  path = resolve_model("default", task_name)
  tokenizer = load_tokenizer(path)
  overrides = {"max_seq_len": 1024} if shots else {}
  model, model_cfg, _ = checkpoints.load_model(path, **overrides)
  return TextSampler(model, model_cfg, tokenizer)


def run_setting(sampler: TextSampler, task, examples, prompts, width: int,
                cfg: SamplerConfig, batch_size: int,
                repeats: int = 1) -> tuple[dict, list[str]]:
  """Samples every example at `cfg` (compiled ahead of time, then timed: the fastest of
  `repeats` passes over all batches; the outputs are the same in every pass)."""
  ids = sampler.tokenizer.special
  n = len(examples)
  tokens, mask = sampler.encode_prompts(prompts, width)
  idx = np.concatenate([np.arange(n), np.zeros((-n) % batch_size, int)])
  batches = idx.reshape(-1, batch_size)
  keys = lambda rows: S.row_keys(jax.random.key(0), batch_size, rows)
  t0 = time.perf_counter()
  compiled = S.generate_compiled.lower(sampler.apply, sampler.params, tokens[batches[0]],
                                       mask[batches[0]], keys(batches[0]), cfg, ids.mask,
                                       ids.eos).compile()
  compile_s = time.perf_counter() - t0
  passes = []
  for _ in range(repeats):
    outs, seconds = [], 0.0
    for rows in batches:
      t0 = time.perf_counter()
      out = jax.device_get(compiled(sampler.params, tokens[rows], mask[rows], keys(rows)))
      seconds += time.perf_counter() - t0
      outs.append(out)
    passes.append(seconds)
  seconds = min(passes)
  toks = np.concatenate([o.tokens for o in outs])[:n, width:]
  nfe_rows = np.concatenate([o.nfe_per_row for o in outs])[:n]
  texts = [sampler.tokenizer.decode(truncate_at_eos(t.tolist(), ids.eos)) for t in toks]
  correct = [task.score(ex, text)["correct"] for ex, text in zip(examples, texts)]
  metrics = {"accuracy": float(np.mean(correct)), "correct": [int(c) for c in correct],
             "mean_nfe": float(nfe_rows.mean()), "batch_nfe": int(sum(o.nfe for o in outs)),
             "seconds": seconds, "seconds_passes": passes, "compile_seconds": compile_s,
             "tokens_per_second": n * cfg.gen_length / seconds}
  return metrics, texts


def run(task_name: str, labels: list[str], limit: int, batch_size: int, shots: int,
        out: Path, repeats: int = 1) -> None:
  task = get_task(task_name)
  examples = task.examples("test", path=DATA.get(task_name), limit=limit, style="compact")
  sampler = load(task_name, shots)
  prefix = few_shot_prefix(task, shots) if shots else ""
  prompts = [prefix + ex.prompt for ex in examples]
  width = sampler.encode_prompts(prompts)[0].shape[1]
  S.check_lengths(width, SamplerConfig(GEN_LENGTH[task_name], GEN_LENGTH[task_name],
                                       GEN_LENGTH[task_name]), sampler.model_cfg.max_seq_len)
  print(f"{task_name}: n={len(examples)} prompt width {width} (shots {shots})", flush=True)
  reference = None
  for label in labels:
    cfg = sampler_config(label, GEN_LENGTH[task_name])
    metrics, texts = run_setting(sampler, task, examples, prompts, width, cfg, batch_size,
                                 repeats)
    reference = reference or texts
    metrics["same_text_as_exact_L"] = float(np.mean([a == b for a, b in zip(texts, reference)]))
    record = {"task": task_name, "setting": label, "shots": shots, "n": len(examples),
              "batch_size": batch_size, "prompt_width": width, "repeats": repeats,
              "sampler": dataclasses.asdict(cfg), **metrics}
    with out.open("a") as f:
      f.write(json.dumps(record) + "\n")
    print(f"  {label:22s} acc {metrics['accuracy']:.3f}  nfe {metrics['mean_nfe']:5.1f}  "
          f"{metrics['seconds']:6.1f} s  {metrics['tokens_per_second']:7.0f} tok/s", flush=True)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--tasks", default="sudoku,countdown,arith")
  ap.add_argument("--settings", default=",".join(SETTINGS),
                  help="comma-separated labels (the first is the reference: exact L)")
  ap.add_argument("--limit", type=int, default=256)
  ap.add_argument("--batch-size", type=int, default=64)
  ap.add_argument("--shots", type=int, default=0)
  ap.add_argument("--repeats", type=int, default=2,
                  help="timed passes per setting (the fastest counts)")
  ap.add_argument("--out", default="experiments/results/fast_decoding/accuracy.jsonl")
  ap.add_argument("--plot", default="experiments/results/fast_decoding_frontier.png")
  ap.add_argument("--table", default=None, help="only print tables (and plot) from this file")
  a = ap.parse_args()
  out = Path(a.table or a.out)
  if a.table is None:
    out.parent.mkdir(parents=True, exist_ok=True)
    labels = a.settings.split(",")
    unknown = sorted(set(labels) - set(SETTINGS))
    if unknown:
      raise SystemExit(f"unknown settings {unknown}; known: {list(SETTINGS)}")
    for task_name in a.tasks.split(","):
      run(task_name, labels, a.limit, a.batch_size, a.shots, out, a.repeats)
  print(tables(out))
  if a.plot:
    print(f"plot: {plot_frontier(out, a.plot)}")


if __name__ == "__main__":
  main()
