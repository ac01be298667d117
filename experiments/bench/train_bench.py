"""Trainer throughput: the SFT step of the default configs against the machine's peak.

    python -m experiments.bench.train_bench [--configs default_sudoku,default_arith]
                                            [--batches 32,64,128] [--steps 8]

For each config, in one run (this machine is shared and noisy, so only ratios measured
together mean anything):
- the float32 matmul peak (best of 512-2048 squares);
- per batch size: the compiled train step's time (median of `steps`, blocked), the
  analytic FLOPs of forward + backward (3 x the forward: every matmul once forward, twice
  backward; attention scores included; the output layer only on the response window, as
  the loss computes it), achieved GFLOP/s and the fraction of peak, tokens/s;
- the breakdown of one training loop step at the config's batch: building the batch on
  the host (data), the step itself, and what a loop that blocks on the loss after every
  step (`float(loss)`, as the loop did before it read metrics one step late) adds;
- the same step with the output layer chunked over masked positions only
  (`data.loss_chunk`), which skips the head where the loss does not need it;
- the same step with bfloat16 matmuls (`model.compute_dtype`, `--dtypes`): whether this
  CPU gains from them is measured, not assumed.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from experiments.bench.sampler_bench import matmul_peak
from models.config import replace as replace_model
from models.sharding import make_mesh
from mro import config as exp_config
from mro.files import append_jsonl
from mro.training.data import BatchStream, build_sequences
from mro.training.loop import prepare_tokenizer, training_examples
from mro.training.losses import make_mdm_loss
from mro.training.step import init_state, jit_train_step, make_optimizer
from mro.training.workdir import Workdir


def step_flops(model_cfg, batch: int, seq: int, response: int) -> float:
  """Forward + backward FLOPs of one SFT step (3 x forward; head on the response only)."""
  forward = model_cfg.flops_per_token(seq, logits_tokens_fraction=response / seq) * seq
  return 3.0 * batch * forward


def _setup(name: str, batch: int, chunk: int, tmp: str, dtype: str, sets=()):
  cfg = exp_config.load_config(name, [f"train.batch_size={batch}",
                                      f"data.loss_chunk={chunk}", "data.train_size=2000",
                                      f"model.compute_dtype={dtype}", *sets])
  examples = training_examples(cfg)
  wd = Workdir(Path(tmp) / name)  # one tokenizer per config
  wd.root.mkdir(parents=True, exist_ok=True)
  tokenizer = prepare_tokenizer(cfg, wd, examples)
  cfg = dataclasses.replace(cfg, model=replace_model(cfg.model,
                                                     vocab_size=tokenizer.vocab_size))
  data = build_sequences(examples, tokenizer, cfg.data)
  stream = BatchStream(data, batch, cfg.data.seed)
  mesh = make_mesh(cfg.mesh)
  optimizer = make_optimizer(cfg.train)
  apply, state, shardings = init_state(cfg.model, optimizer, 0, mesh)
  loss_fn = make_mdm_loss(tokenizer.special.mask, cfg.data.mask_eps, cfg.data.objective,
                          resp_start=cfg.data.max_prompt_len, chunk=cfg.data.loss_chunk)
  step = jit_train_step(apply, loss_fn, optimizer, cfg.train, shardings, mesh)
  return cfg, stream, state, step


def measure(name: str, batch: int, steps: int, tmp: str, chunk: int = 0,
            dtype: str = "float32", sets=()) -> dict:
  """One config's step timings; `sets`: more `--set` overrides (a model shape; a
  `model.compute_dtype` there wins over `dtype`)."""
  cfg, stream, state, step = _setup(name, batch, chunk, tmp, dtype, sets)
  batches = [stream.batch(i * batch) for i in range(steps + 1)]
  step = step.lower(state, batches[0]).compile()
  state, m = step(state, batches[0])
  jax.block_until_ready(m)
  times = []
  for b in batches[1:]:
    t = time.perf_counter()
    state, m = step(state, b)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  t_step = float(np.median(times))
  t = time.perf_counter()
  for i in range(steps):
    stream.batch(i * batch)
  t_data = (time.perf_counter() - t) / steps
  # a loop that blocks on the loss after each step vs one that reads it a step late
  t = time.perf_counter()
  for b in batches[1:]:
    state, m = step(state, b)
    float(m["loss"])
  t_blocking = (time.perf_counter() - t) / steps
  t = time.perf_counter()
  previous = None
  for b in batches[1:]:
    state, m = step(state, b)
    if previous is not None:
      float(previous["loss"])
    previous = m
  float(previous["loss"])
  t_deferred = (time.perf_counter() - t) / steps
  seq = cfg.data.max_prompt_len + cfg.data.max_response_len
  flops = step_flops(cfg.model, batch, seq, cfg.data.max_response_len)
  return {"config": name, "batch": batch, "chunk": chunk, "dtype": dtype, "seq": seq,
          "params_m": cfg.model.num_params() / 1e6, "step_s": t_step, "data_s": t_data,
          "blocking_loop_s": t_blocking, "deferred_loop_s": t_deferred,
          "gflop_s": flops / t_step / 1e9, "tokens_s": batch * seq / t_step}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--configs", default="default_sudoku,default_countdown,default_arith")
  ap.add_argument("--batches", default="32,64,128")
  ap.add_argument("--steps", type=int, default=8)
  ap.add_argument("--chunks", default="0,16", help="data.loss_chunk values (0: off)")
  ap.add_argument("--dtypes", default="float32,bfloat16", help="model.compute_dtype values")
  ap.add_argument("--out", help="append one JSON line per measurement here")
  a = ap.parse_args()
  tmp = tempfile.mkdtemp(prefix="train_bench_")
  peak = matmul_peak()
  print(f"matmul peak (float32, this run): {peak / 1e9:.0f} GFLOP/s\n")
  print("| config | params | batch x seq | loss chunk | matmuls | step s | tokens/s | GFLOP/s "
        "| of peak | data s | blocking loop s | deferred loop s |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for name in a.configs.split(","):
    for batch in (int(b) for b in a.batches.split(",")):
      for chunk in (int(c) for c in a.chunks.split(",")):
        for dtype in a.dtypes.split(","):
          r = measure(name, batch, a.steps, tmp, chunk, dtype)
          r["peak_gflop_s"] = peak / 1e9
          print(f"| {name} | {r['params_m']:.1f}M | {batch} x {r['seq']} | {chunk or '-'} | "
                f"{dtype} | {r['step_s']:.3f} | {r['tokens_s']:,.0f} | {r['gflop_s']:.0f} | "
                f"{r['gflop_s'] * 1e9 / peak:.1%} | {r['data_s']:.4f} | "
                f"{r['blocking_loop_s']:.3f} | {r['deferred_loop_s']:.3f} |", flush=True)
          if a.out:
            append_jsonl(a.out, [r])


if __name__ == "__main__":
  main()
