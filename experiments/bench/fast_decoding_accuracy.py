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

Every setting decodes through `mro.method.search.decode.decode`, the decoder `mro eval`
runs: a first call on one batch compiles (`compile_seconds`, not timed), then each timed
pass decodes every example (`--batch-size` rows per call, row i keyed by example index i;
the time includes turning tokens into text, as `mro eval` times it); all settings of a
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

import numpy as np

from experiments.bench.fast_decoding_report import plot_frontier, tables
from models import checkpoints
from models.tokenizers import load_tokenizer
from mro.evaluation.protocols import get_protocol
from mro.loading import resolve_model, search_runner
from mro.method.search.decode import decode
from mro.sampling import sampler as S
from mro.sampling.schedule import SamplerConfig, fast
from mro.sampling.textgen import TextSampler
from rewards.tasks import get_task

DATA = {"sudoku": "experiments/data/sudoku_test_12blanks.csv"}

# label -> (steps as a fraction of L, SamplerConfig overrides); block None = one block.
SETTINGS: dict[str, tuple[float, dict]] = {
    "exact L": (1, {}),
    "exact L/2": (1 / 2, {}),
    "exact L/4": (1 / 4, {}),
    "cache L": (1, dict(cache="dual")),
    "cache L/2": (1 / 2, dict(cache="dual")),
    "thr 0.999": (1, dict(threshold=0.999)),
    "thr 0.99": (1, dict(threshold=0.99)),
    "thr 0.9": (1, dict(threshold=0.9)),
    "thr 0.7": (1, dict(threshold=0.7)),
    "thr 0.5": (1, dict(threshold=0.5)),
    "factor 0.5": (1, dict(factor=0.5)),
    "factor 1": (1, dict(factor=1.0)),
    "cache thr 0.999": (1, dict(cache="dual", threshold=0.999)),
    "cache thr 0.99": (1, dict(cache="dual", threshold=0.99)),
    "cache r4 thr 0.99": (1, dict(cache="dual", threshold=0.99, refresh_every=4)),
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
    "b8 dual thr 0.99 eos": (1, dict(block_length=8, cache="dual", threshold=0.99,
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


class Setting:
  """One sampler setting on a task's examples, decoded in batches of `batch_size`: the first
  call (one batch) compiles and is not timed; each `timed_pass` decodes every example and
  returns the seconds."""

  def __init__(self, sampler: TextSampler, prompts, width: int, cfg: SamplerConfig,
               batch_size: int):
    self.runner, self.prompts, self.width = search_runner(sampler), prompts, width
    self.cfg, self.n = cfg, len(prompts)
    idx = np.concatenate([np.arange(self.n), np.zeros((-self.n) % batch_size, int)])
    self.batches = idx.reshape(-1, batch_size)
    t0 = time.perf_counter()
    self._decode(self.batches[0])
    self.compile_seconds = time.perf_counter() - t0  # the compile and one batch
    self.passes: list[float] = []
    self.outs = None

  def _decode(self, rows):
    return decode(self.runner, [self.prompts[i] for i in rows], self.cfg, row_ids=rows,
                  width=self.width)

  def timed_pass(self) -> float:
    outs, seconds = [], 0.0
    for rows in self.batches:
      t0 = time.perf_counter()
      outs.append(self._decode(rows))
      seconds += time.perf_counter() - t0
    self.outs = self.outs or outs  # every pass gives the same outputs
    self.passes.append(seconds)
    return seconds

  def metrics(self, task, examples) -> tuple[dict, list[str]]:
    texts = [t for o in self.outs for t in o.texts][:self.n]
    nfe_rows = np.asarray([n for o in self.outs for n in o.prompt_nfe][:self.n])
    correct = [task.score(ex, text)["correct"] for ex, text in zip(examples, texts)]
    seconds = min(self.passes)
    return {"accuracy": float(np.mean(correct)), "correct": [int(c) for c in correct],
            "mean_nfe": float(nfe_rows.mean()),
            "batch_nfe": int(sum(o.nfe for o in self.outs)), "seconds": seconds,
            "seconds_passes": self.passes, "compile_seconds": self.compile_seconds,
            "tokens_per_second": self.n * self.cfg.gen_length / seconds}, texts


def run(task_name: str, labels: list[str], limit: int, batch_size: int, shots: int,
        out: Path, repeats: int = 1) -> None:
  """Every setting once (accuracy, first timing; a record each), then `repeats - 1` more
  timing passes round-robin over the settings, so that the machine's load drifts over
  all of them alike; the fastest pass counts (records rewritten at the end)."""
  task = get_task(task_name)
  examples = task.examples("test", path=DATA.get(task_name), limit=limit, style="compact")
  sampler = load(task_name, shots)
  prefix = few_shot_prefix(task, shots) if shots else ""
  prompts = [prefix + ex.prompt for ex in examples]
  width = sampler.encode_prompts(prompts)[0].shape[1]
  gen_length = get_protocol("compact", task_name).gen_length  # what `mro eval` decodes
  S.check_lengths(width, SamplerConfig(gen_length, gen_length, gen_length),
                  sampler.model_cfg.max_seq_len)
  print(f"{task_name}: n={len(examples)} prompt width {width} (shots {shots})", flush=True)
  settings = {}
  for label in labels:
    settings[label] = Setting(sampler, prompts, width, sampler_config(label, gen_length),
                              batch_size)
    settings[label].timed_pass()
    _record(task, examples, task_name, label, settings, shots, batch_size, out)
  for _ in range(repeats - 1):
    for setting in settings.values():
      setting.timed_pass()
  if repeats > 1:
    print(f"  after {repeats} timing passes (fastest):", flush=True)
    for label in labels:
      _record(task, examples, task_name, label, settings, shots, batch_size, out)


def _record(task, examples, task_name, label, settings, shots, batch_size, out: Path):
  metrics, texts = settings[label].metrics(task, examples)
  _, reference = next(iter(settings.values())).metrics(task, examples)
  metrics["same_text_as_exact_L"] = float(np.mean([a == b for a, b in zip(texts, reference)]))
  setting = settings[label]
  record = {"task": task_name, "setting": label, "shots": shots, "n": len(examples),
            "batch_size": batch_size, "prompt_width": setting.width,
            "passes": len(setting.passes), "sampler": dataclasses.asdict(setting.cfg),
            **metrics}
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
  ap.add_argument("--plot", default="experiments/results/fast_decoding/frontier.png")
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
