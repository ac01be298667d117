"""Benchmarks (each module's docstring says what it measures and how to run it)."""

from __future__ import annotations

import argparse

import jax
import numpy as np
from flax import nnx

from models.config import preset
from models.transformer import ModelApply, init_model


def sampler_shape_parser(description: str, *, prompt_len: int, gen: int, steps,
                         repeats: int) -> argparse.ArgumentParser:
  """The command line of the sampler speed benchmarks: model preset (random weights),
  batch, prompt and response lengths, block, steps and timing repeats."""
  ap = argparse.ArgumentParser(description=description)
  ap.add_argument("--preset", default="small")
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--prompt-len", type=int, default=prompt_len)
  ap.add_argument("--gen", type=int, default=gen)
  ap.add_argument("--block", type=int, default=32)
  ap.add_argument("--steps", type=type(steps), default=steps)
  ap.add_argument("--repeats", type=int, default=repeats)
  return ap


def random_model(preset_name: str, batch: int, prompt_len: int):
  """A preset model with random weights and a random prompt batch: (model config, apply,
  params, MASK id, prompts int32 [batch, prompt_len] as NumPy)."""
  model_cfg = preset(preset_name)
  graphdef, params = nnx.split(init_model(model_cfg, seed=0))
  mask_id = model_cfg.vocab_size - 1
  prompt = np.asarray(jax.random.randint(jax.random.key(1), (batch, prompt_len), 0, mask_id),
                      np.int32)
  return model_cfg, ModelApply(graphdef), params, mask_id, prompt
