"""What reject sampling and RL share: the starting model, the scorer, validation.

Both start from a trained model (`start.model`, "default" = the shipped one for the task),
keep its shapes and tokenizer, and validate on the task's held-out validation split with
the plain sampler at the config's sampler settings; the best model is exported to
workdir/best (mro/training/loop.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from models.config import DTYPES
from mro import config as exp_config
from mro.messages import quoted
from mro.sampling.textgen import TextSampler, batch_rows, batches
from mro.loading import load_inference_model, resolve_model, resolve_scorer
from mro.training.loop import run_mesh, setup, training_examples
from rewards.tasks import get_task

VALIDATION_BATCH = 64


@dataclasses.dataclass
class Start:
  """The starting model bound to its tokenizer, and the optional perplexity scorer."""
  sampler: TextSampler
  params: object  # nnx state to start training from
  model_dir: Path
  scorer: object = None
  scorer_tokenizer: object = None


def load_start(cfg: exp_config.ExperimentConfig) -> tuple[exp_config.ExperimentConfig, Start]:
  """The config with the starting model's shapes and tokenizer, and the loaded models."""
  if cfg.start.model is None:
    raise ValueError("start.model must name the model to start from (a model dir or "
                     "'default')")
  model_dir = resolve_model(cfg.start.model, cfg.data.task)
  mesh = run_mesh(cfg.mesh)  # the training mesh: rollouts and validation run on it too
  model, model_cfg, _, tokenizer = load_inference_model(model_dir, mesh)
  if model_cfg.causal:
    raise ValueError(f"start.model={model_dir} is a causal model; MRO trains a mask "
                     "predictor")
  # Train with the configured parameter dtype (float32 by default) whatever the stored one
  # (the shipped models are stored in bfloat16; small updates vanish in bfloat16 weights).
  dtype = cfg.model.param_dtype
  if model_cfg.param_dtype != dtype:
    state = nnx.state(model)
    nnx.update(model, jax.tree.map(lambda x: x.astype(DTYPES[dtype]), state))
    model_cfg = dataclasses.replace(model_cfg, param_dtype=dtype)
    model.cfg = model_cfg
  cfg = dataclasses.replace(
      cfg, model=dataclasses.replace(model_cfg, remat=cfg.model.remat,
                                     compute_dtype=cfg.model.compute_dtype),
      tokenizer=dataclasses.replace(cfg.tokenizer, path=str(model_dir)))
  start = Start(TextSampler(model, model_cfg, tokenizer, mesh), nnx.split(model)[1],
                model_dir)
  if cfg.rewards.on("ppl"):
    scorer = resolve_scorer(cfg.start.scorer, cfg.data.task, cfg.start.model)
    if scorer is None:
      raise ValueError("the ppl reward needs start.scorer (a causal model dir or 'default')")
    start.scorer, _, _, start.scorer_tokenizer = load_inference_model(scorer, mesh)
  return cfg, start


def validation(cfg: exp_config.ExperimentConfig, sampler: TextSampler):
  """validate(step, params) -> {"score": accuracy, "format": ...} on the validation split."""
  task = get_task(cfg.data.task)
  examples = task.examples("validation", path=cfg.validation.data, limit=cfg.validation.limit,
                           seed=cfg.data.seed, style=cfg.data.style)
  if not examples:
    raise ValueError(f"task {quoted(cfg.data.task)} has no validation examples")
  prompts = [e.prompt for e in examples]
  width = sampler.encode_prompts(prompts)[0].shape[1]

  size = batch_rows(len(prompts), VALIDATION_BATCH, sampler.mesh)
  decode = cfg.sampler
  if cfg.validation.steps is not None:
    try:
      decode = dataclasses.replace(cfg.sampler, steps=cfg.validation.steps)
    except ValueError as e:
      raise ValueError(f"validation.steps={cfg.validation.steps}: {e}") from None

  def validate(step: int, params) -> dict[str, float]:
    gens = []
    for idx, real in batches(len(prompts), size):  # padded: one compile for every batch
      gens += sampler.generate([prompts[i] for i in idx], decode, seed=cfg.train.seed,
                               row_ids=idx, width=width, params=params)[:real]
    scores = [task.score(e, g.text)["correct"] for e, g in zip(examples, gens)]
    return {"score": float(np.mean(scores))}

  return validate


def begin(cfg: exp_config.ExperimentConfig, workdir: str | Path):
  """What reject sampling and RL do first: load the starting model (the config takes its
  shapes and tokenizer), read the training examples and set up the workdir. Returns
  (cfg, start, examples, workdir, tokenizer). With several processes, the verbs checked
  first that all were given the same config (`holding_lock`), before any loads anything."""
  cfg, start = load_start(cfg)
  examples = training_examples(cfg)
  wd, cfg, tokenizer = setup(cfg, workdir, examples)
  return cfg, start, examples, wd, tokenizer
