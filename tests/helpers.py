"""Shared test helpers: the fixture model loaded once, and an independent NumPy
re-statement of the sampler's step rule, used to check whole trajectories.

`check_trajectory` does not call the sampler: it rebuilds each state from
`commit_step`, runs the network on it, and re-derives which positions the step must
commit (argmax token, remasking score, top-k or threshold, current block) in float64
NumPy. Agreement therefore checks the sampler's semantics, not the sampler against itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from models.checkpoints import load_model
from models.config import ModelConfig, SpecialIds
from mro.sampling.sampler import PROMPT, GenerateOutput, ModelApply, generate
from mro.sampling.schedule import SamplerConfig, block_of_step, tokens_per_step


class Loaded(NamedTuple):
  model: Any
  cfg: ModelConfig
  ids: SpecialIds
  apply: ModelApply
  params: Any
  forward: Any  # jitted (params, tokens, attention_mask | None) -> full logits

  def generate(self, prompts, scfg: SamplerConfig, **kw) -> GenerateOutput:
    return generate(self.apply, self.params, prompts, scfg, mask_id=self.ids.mask,
                    max_seq_len=self.cfg.max_seq_len, **kw)

  def logits(self, tokens, attention_mask=None) -> np.ndarray:
    mask = None if attention_mask is None else np.asarray(attention_mask)
    return np.asarray(self.forward(self.params, np.asarray(tokens, np.int32), mask))


def load(model_dir: str | Path, **overrides) -> Loaded:
  model, cfg, ids = load_model(model_dir, **overrides)
  graphdef, params = nnx.split(model)
  forward = jax.jit(lambda p, t, m: nnx.merge(graphdef, p)(t, m))
  return Loaded(model, cfg, ids, ModelApply(graphdef), params, forward)


def fixture_settings(generate_ref: dict) -> list[dict]:
  return json.loads(str(generate_ref["settings"]))


def sampler_config(setting: dict) -> SamplerConfig:
  """The SamplerConfig of one run listed in generate.npz `settings`."""
  return SamplerConfig(gen_length=setting["gen_length"], steps=setting["steps"],
                       block_length=setting["block_length"],
                       temperature=setting["temperature"], remasking=setting["remasking"],
                       cfg_scale=setting["cfg_scale"])


def num_steps(out: GenerateOutput, scfg: SamplerConfig) -> int:
  return int(out.nfe) // (2 if scfg.cfg_scale else 1)


def assert_committed_once(out: GenerateOutput, prompt_len: int, scfg: SamplerConfig,
                          mask_id: int) -> None:
  """Prompt marked PROMPT; every generated position committed at one step in [0, steps);
  no MASK left; under the fixed schedule, each step commits tokens_per_step tokens."""
  tokens, commit = np.asarray(out.tokens), np.asarray(out.commit_step)
  steps = num_steps(out, scfg)
  np.testing.assert_array_equal(commit[:, :prompt_len], PROMPT)
  gen = commit[:, prompt_len:]
  assert gen.min() >= 0 and gen.max() < steps, (gen.min(), gen.max(), steps)
  assert not (tokens[:, prompt_len:] == mask_id).any(), "a MASK token was left"
  if scfg.threshold is None:
    assert steps == scfg.steps
    want = tokens_per_step(scfg)
    for row in gen:
      np.testing.assert_array_equal(np.bincount(row, minlength=steps), want)


def _log_softmax(logits):
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def remasking_score(logits_KV: np.ndarray, x0_K: np.ndarray, remasking: str) -> np.ndarray:
  """Higher = commit first (float64), written from method.md, not from mro/sampling/sampler.py."""
  logp = _log_softmax(logits_KV)
  p = np.exp(logp)
  if remasking == "low_confidence":
    return np.take_along_axis(p, x0_K[:, None], -1)[:, 0]
  if remasking == "margin":
    top2 = np.sort(p, -1)[:, -2:]
    return top2[:, 1] - top2[:, 0]
  if remasking == "entropy":  # negative entropy, 0 * log 0 = 0
    return np.where(p > 0, p * np.where(p > 0, logp, 0.0), 0.0).sum(-1)
  raise ValueError(remasking)


def check_trajectory(loaded: Loaded, out: GenerateOutput, prompt_len: int,
                     scfg: SamplerConfig, prompt_mask=None, tol: float = 1e-5) -> None:
  """Re-derives every step of a temperature-0 run (see module docstring).

  `random` remasking has no recomputable score: only tokens, counts and blocks are checked.
  """
  assert scfg.temperature == 0
  mask_id = loaded.ids.mask
  tokens, commit = np.asarray(out.tokens), np.asarray(out.commit_step)
  B, L = tokens.shape
  attn = None
  if prompt_mask is not None:
    attn = np.concatenate([np.asarray(prompt_mask), np.ones((B, scfg.gen_length), np.int32)], 1)
  schedule_block, schedule_k = block_of_step(scfg), tokens_per_step(scfg)
  for t in range(num_steps(out, scfg)):
    x = np.where(commit < t, tokens, mask_id)
    logits = loaded.logits(x, attn).astype(np.float64)
    if scfg.cfg_scale:
      uncond = x.copy()
      uncond[:, :prompt_len] = mask_id
      logits_u = loaded.logits(uncond, attn).astype(np.float64)
      logits = logits_u + (scfg.cfg_scale + 1.0) * (logits - logits_u)
    logits[..., mask_id] = -np.inf
    for b in range(B):
      open_gen = commit[b, prompt_len:] >= t  # still MASK before step t
      if not open_gen.any():
        assert not (commit[b] == t).any()
        continue
      if scfg.threshold is None:
        blk = schedule_block[t]
      else:  # the first block that still has a MASK
        blk = int(np.argmax(open_gen.reshape(scfg.num_blocks, -1).any(-1)))
      pos = prompt_len + blk * scfg.block_length + np.arange(scfg.block_length)
      now = commit[b, pos] == t
      assert (commit[b] == t).sum() == now.sum(), f"step {t} row {b}: commit outside block {blk}"
      is_open = commit[b, pos] >= t
      x0 = logits[b, pos].argmax(-1)
      np.testing.assert_array_equal(tokens[b, pos][now], x0[now],
                                    err_msg=f"step {t} row {b}: committed token is not argmax")
      if scfg.threshold is None:
        assert now.sum() == schedule_k[t], (t, b, now.sum(), schedule_k[t])
      else:
        assert now.sum() >= 1, (t, b)
      if scfg.remasking == "random":
        continue
      score = remasking_score(logits[b, pos], x0, scfg.remasking)
      waiting = is_open & ~now
      if waiting.any():
        assert score[now].min() >= score[waiting].max() - tol, (
            f"step {t} row {b}: an uncommitted position outranks a committed one")
      if scfg.threshold is not None:
        assert (score[waiting] < scfg.threshold + tol).all(), (t, b)
        below = now & (score < scfg.threshold - tol)
        assert below.sum() <= (1 if now.sum() == 1 else 0), (
            f"step {t} row {b}: committed below the threshold beyond the one forced commit")
