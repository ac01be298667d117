"""`mro train`: tokenizer, data, model, the jitted step, checkpoints, metrics, export.

Running it on an existing workdir resumes from the latest checkpoint (train state, RNG and
data position), so the next step's loss equals the uninterrupted run's. A NaN or Inf loss
stops the run with the step named; the last good checkpoint is kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from models import checkpoints
from models.config import replace as replace_model
from models.sharding import check_batch_divides, make_mesh
from models.tokenizers import load_tokenizer, train_sentencepiece
from mro import config as exp_config
from mro import workdir as wdlib
from mro.checkpointing import Checkpointer
from mro.data import BatchStream, build_sequences
from mro.losses import make_mdm_loss
from mro.train import (LossFn, NonFiniteLossError, init_state, jit_train_step,
                       make_optimizer)
from rewards.tasks import get_task

TASK_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def training_examples(cfg: exp_config.ExperimentConfig, split: str = "train"):
  task = get_task(cfg.data.task)
  return task.examples(split, path=cfg.data.path, limit=cfg.data.train_size or None,
                       seed=cfg.data.seed, style=cfg.data.style)


def prepare_tokenizer(cfg: exp_config.ExperimentConfig, wd: wdlib.Workdir, examples):
  if wd.tokenizer.exists():
    return load_tokenizer(wd.tokenizer)
  if cfg.tokenizer.path:
    tok = load_tokenizer(cfg.tokenizer.path)
    tok.save(wd.tokenizer)
    return tok
  texts = [t for ex in examples for t in (ex.prompt, ex.target)]
  return train_sentencepiece(texts, wd.tokenizer, cfg.tokenizer.vocab_size,
                             user_symbols=TASK_TAGS, byte_fallback=cfg.tokenizer.byte_fallback,
                             hard_vocab_limit=False)


def _wandb_run(cfg: exp_config.ExperimentConfig, wd: wdlib.Workdir):
  if not cfg.train.wandb:
    return None
  import wandb
  return wandb.init(project=cfg.train.wandb_project, dir=str(wd.root), config=cfg.to_dict(),
                    id=wd.root.resolve().name, resume="allow")


def run(cfg: exp_config.ExperimentConfig, workdir: str | Path, *, loss_fn: LossFn | None = None,
        stop_after: int | None = None) -> dict[str, Any]:
  """Trains (or resumes) in `workdir`; returns the final metrics record.

  `loss_fn` replaces the masked-diffusion objective (later objectives plug in here);
  `stop_after` ends the run early at that step, as an interruption would (for tests).
  """
  wd = wdlib.claim(workdir, cfg)
  examples = training_examples(cfg)
  tokenizer = prepare_tokenizer(cfg, wd, examples)
  cfg = dataclasses.replace(cfg, model=replace_model(cfg.model,
                                                     vocab_size=tokenizer.vocab_size))
  exp_config.save_resolved(cfg, wd.config)
  data = build_sequences(examples, tokenizer, cfg.data)
  mesh = make_mesh(cfg.mesh)
  check_batch_divides(cfg.train.batch_size // cfg.train.grad_accum, mesh)
  stream = BatchStream(data, cfg.train.batch_size, cfg.data.seed)
  optimizer = make_optimizer(cfg.train)
  apply, state, shardings = init_state(cfg.model, optimizer, cfg.train.seed, mesh)
  if loss_fn is None:
    loss_fn = make_mdm_loss(tokenizer.special.mask, cfg.data.mask_eps, cfg.data.objective,
                            resp_start=cfg.data.max_prompt_len, chunk=cfg.data.loss_chunk)
  step_fn = jit_train_step(apply, loss_fn, optimizer, cfg.train, shardings, mesh)

  ckpt = Checkpointer(wd.checkpoints, cfg.train.keep_checkpoints)
  position, start = 0, 0
  if (latest := ckpt.latest_step()) is not None:
    state, meta = ckpt.restore(latest, state)
    position, start = meta["data_position"], latest
  wdlib.truncate_metrics(wd.metrics, start)
  end = cfg.train.steps if stop_after is None else min(stop_after, cfg.train.steps)
  record: dict[str, Any] = (wdlib.read_metrics(wd.metrics) or [{}])[-1]
  if start >= end:
    ckpt.close()
    return record
  step_fn = step_fn.lower(state, stream.batch(position)).compile()  # keep compile out of timing
  run_wandb = _wandb_run(cfg, wd)
  bar = tqdm(total=cfg.train.steps, initial=start, disable=not cfg.train.progress,
             desc="train", dynamic_ncols=True)
  with contextlib.closing(bar):
    for step in range(start + 1, end + 1):
      t0 = time.perf_counter()
      batch = stream.batch(position)
      state, metrics = step_fn(state, batch)
      position += cfg.train.batch_size
      loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
      seconds = time.perf_counter() - t0
      if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        ckpt.close()
        raise NonFiniteLossError(
            f"loss {loss}, gradient norm {grad_norm} at step {step}; stopped. The last good "
            f"checkpoint is step {ckpt.latest_step()} in {wd.checkpoints}")
      tokens_per_s = float(batch["attn_mask"].sum()) / seconds
      bar.update(1)
      bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}")
      if step % cfg.train.log_every == 0 or step == end:
        record = {"step": step, "data_position": position, "seconds": seconds,
                  "tokens_per_s": tokens_per_s,
                  **{k: float(np.asarray(v)) for k, v in metrics.items()}}
        wdlib.append_metrics(wd.metrics, record)
        if run_wandb is not None:
          run_wandb.log(record, step=step)
      if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:
        ckpt.save(step, state, {"data_position": position, "step": step})
  ckpt.close()
  if run_wandb is not None:
    run_wandb.finish()
  if end == cfg.train.steps:
    export(wd, cfg, jax.device_get(state.params), tokenizer)
  return record


def export(wd: wdlib.Workdir, cfg: exp_config.ExperimentConfig, params, tokenizer) -> Path:
  """The final model as a portable HF-format directory with its tokenizer."""
  checkpoints.save_hf(wd.model, params, cfg.model, tokenizer.special)
  tokenizer.save(wd.model)
  return wd.model
