"""Shared test helpers: the fixture model loaded once, and an independent NumPy
re-statement of the sampler's step rule, used to check whole trajectories.

`check_trajectory` does not call the sampler: it rebuilds each state from
`commit_step`, runs the network on it, and re-derives which positions the step must
commit (argmax token, remasking score, top-k or threshold, current block) in float64
NumPy. Agreement therefore checks the sampler's semantics, not the sampler against itself.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from models.checkpoints import load_model
from models.config import ModelConfig, SpecialIds
from mro.sampling.sampler import PROMPT, GenerateOutput, ModelApply, generate
from mro.sampling.schedule import SamplerConfig, block_of_step, tokens_per_step


EPS32 = float(np.finfo(np.float32).eps)


def rounding_atol(values, terms: int, k: float = 4.0) -> float:
  """Absolute tolerance between two float32 computations of the same quantity whose sums
  run in a different order: a matmul kernel blocks its sums by the CPU, its thread count
  and the shapes, and chunking or sharding regroups them. Reordering a sum of `terms`
  rounded values moves it by about sqrt(terms) eps32 of the values' magnitude; `k` leaves
  room (a few layers, a softmax). Scaled to max|values|, so it holds on any CPU, and it
  stays orders of magnitude below what a real bug moves."""
  return k * float(np.sqrt(terms)) * EPS32 * float(np.max(np.abs(np.asarray(values))))


class Loaded(NamedTuple):
  model: Any
  cfg: ModelConfig
  ids: SpecialIds
  apply: ModelApply
  params: Any
  forward: Any  # jitted (params, tokens, attention_mask | None) -> full logits
  fill: Any  # jitted ModelApply.fill
  window: Any  # jitted ModelApply.window (width static)

  def generate(self, prompts, scfg: SamplerConfig, **kw) -> GenerateOutput:
    return generate(self.apply, self.params, prompts, scfg, mask_id=self.ids.mask,
                    max_seq_len=self.cfg.max_seq_len, **{"eos_id": self.ids.eos, **kw})

  def logits(self, tokens, attention_mask=None) -> np.ndarray:
    mask = None if attention_mask is None else np.asarray(attention_mask)
    return np.asarray(self.forward(self.params, np.asarray(tokens, np.int32), mask))


def joined_process_env(devices: int, **extra: str) -> dict[str, str]:
  """The environment of a test's subprocess joined to others by `jax.distributed`:
  `devices` fake CPU devices, the suite's other XLA flags (conftest.py: its optimisation
  level, so they compile as the tests in pytest do), and JAX's disk cache off even where
  the caller's JAX_COMPILATION_CACHE_DIR turns it on (executables of a multi-process CPU
  program read back from it hang)."""
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ["XLA_FLAGS"])
  return dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}",
              JAX_ENABLE_COMPILATION_CACHE="false", JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
              **extra)


def load(model_dir: str | Path, **overrides) -> Loaded:
  model, cfg, ids = load_model(model_dir, **overrides)
  graphdef, params = nnx.split(model)
  forward = jax.jit(lambda p, t, m: nnx.merge(graphdef, p)(t, m))
  apply = ModelApply(graphdef)
  return Loaded(model, cfg, ids, apply, params, forward, jax.jit(apply.fill),
                jax.jit(apply.window, static_argnums=5))


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
  no MASK left; under the fixed schedule, each step commits tokens_per_step tokens.
  NFE: a row's NFE counts exactly the steps that committed something for it (its commit
  steps are 0 .. NFE-1, each used), and the batch NFE the loop's steps: the slowest row,
  or with a cache under an adaptive rule (rows in lockstep) the slowest row of each block."""
  tokens, commit = np.asarray(out.tokens), np.asarray(out.commit_step)
  steps = num_steps(out, scfg)
  np.testing.assert_array_equal(commit[:, :prompt_len], PROMPT)
  gen = commit[:, prompt_len:]
  assert gen.min() >= 0 and gen.max() < steps, (gen.min(), gen.max(), steps)
  assert not (tokens[:, prompt_len:] == mask_id).any(), "a MASK token was left"
  if scfg.adaptive and scfg.fixed_steps and not scfg.stop_at_eos:
    assert steps == scfg.steps  # the batch runs every step; a row may finish sooner
  if not scfg.adaptive and not scfg.stop_at_eos:
    assert steps == scfg.steps
    want = tokens_per_step(scfg)
    for row in gen:
      np.testing.assert_array_equal(np.bincount(row, minlength=steps), want)
  if out.nfe_per_row is None:
    return
  views = 2 if scfg.cfg_scale else 1
  row_nfe = np.asarray(out.nfe_per_row)
  for b, row in enumerate(gen):
    assert row_nfe[b] == views * (row.max() + 1), (b, row_nfe[b], row.max())
    if scfg.adaptive or tokens_per_step(scfg).all():  # Dream's schedule has empty steps
      assert set(row.tolist()) == set(range(row.max() + 1)), f"row {b}: a step committed nothing"
  assert steps == _loop_steps(gen, scfg), (steps, _loop_steps(gen, scfg))


def _loop_steps(gen_commit: np.ndarray, scfg: SamplerConfig) -> int:
  if scfg.adaptive and scfg.fixed_steps and not scfg.stop_at_eos:
    return scfg.steps
  if not (scfg.adaptive and scfg.cache != "none"):
    return int(gen_commit.max()) + 1
  per_block = np.zeros((gen_commit.shape[0], scfg.num_blocks), int)
  for b, row in enumerate(gen_commit):
    for t in range(row.max() + 1):  # a step works on the first block it commits in
      per_block[b, np.flatnonzero(row == t)[0] // scfg.block_length] += 1
  return int(per_block.max(0).sum())


def _log_softmax(logits):
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def remasking_score(logits_KV: np.ndarray, x0_K: np.ndarray, remasking: str) -> np.ndarray:
  """Higher = commit first (float64), written from method.md, not from mro/sampling/sampler.py."""
  logp = _log_softmax(logits_KV)
  p = np.exp(logp)
  if remasking in ("low_confidence", "maskgit_plus"):
    return np.take_along_axis(p, x0_K[:, None], -1)[:, 0]
  if remasking in ("margin", "topk_margin"):
    top2 = np.sort(p, -1)[:, -2:]
    return top2[:, 1] - top2[:, 0]
  if remasking == "entropy":  # negative entropy, 0 * log 0 = 0
    return np.where(p > 0, p * np.where(p > 0, logp, 0.0), 0.0).sum(-1)
  raise ValueError(remasking)


def check_trajectory(loaded: Loaded, out: GenerateOutput, prompt_len: int,
                     scfg: SamplerConfig, prompt_mask=None, tol: float = 1e-5,
                     eos_id: int | None = None) -> None:
  """Re-derives every step of a temperature-0 run (see module docstring), row by row
  in each row's own steps (t = 0 .. its NFE - 1).

  Logits: without a cache, the network on the state before step t. With a cache, the
  state at the row's last refill (its block's first step, and every refresh_every steps
  after it) fills the K/V, and the step's logits come from a window forward over the
  current block (dual) or the block and everything after it (prefix, exact width) on
  the state before step t; at a refill step they are the full forward's.
  `random` remasking has no recomputable score: only tokens, counts and blocks are checked.
  """
  assert scfg.temperature == 0
  tokens, commit = np.asarray(out.tokens), np.asarray(out.commit_step)
  B = tokens.shape[0]
  attn = None
  if prompt_mask is not None:
    attn = np.concatenate([np.asarray(prompt_mask), np.ones((B, scfg.gen_length), np.int32)], 1)
  views = 2 if scfg.cfg_scale else 1
  row_steps = (np.asarray(out.nfe_per_row) // views if out.nfe_per_row is not None
               else np.full(B, num_steps(out, scfg)))
  exact = {}  # t -> full logits of every row (no cache)
  for b in range(B):
    gen = commit[b, prompt_len:]
    assert gen.max() < row_steps[b], f"row {b}: commit step beyond its NFE"
    block_start: dict[int, int] = {}
    for t in range(row_steps[b]):
      blk = _step_block(gen, t, scfg)
      block_start.setdefault(blk, t)
      if scfg.cache == "none":
        if t not in exact:
          exact[t] = _guided(loaded, np.where(commit < t, tokens, loaded.ids.mask), attn,
                             prompt_len, scfg)
        logits = exact[t][b]
      else:
        t0 = block_start[blk]
        t_fill = t0 + (t - t0) // scfg.refresh_every * scfg.refresh_every \
            if scfg.refresh_every else t0
        logits = _cached_row_logits(loaded, tokens[b], commit[b], t, t_fill, blk,
                                    None if attn is None else attn[b], prompt_len, scfg)
      # fixed_steps: a row works on a block from its first step until done, so the steps
      # of the block left (itself included) are steps_per_block - (t - its first step)
      left = scfg.steps_per_block - (t - block_start[blk]) if scfg.fixed_steps else None
      _check_step(tokens[b], commit[b], logits.astype(np.float64), t, blk, b, prompt_len,
                  scfg, tol, eos_id, loaded.ids.mask, left)


def _step_block(gen_commit: np.ndarray, t: int, scfg: SamplerConfig) -> int:
  if not scfg.adaptive:
    return int(block_of_step(scfg)[t])
  open_gen = gen_commit >= t  # the first block that still has a MASK before step t
  return int(np.argmax(open_gen.reshape(scfg.num_blocks, -1).any(-1)))


def _views(loaded, x, attn, prompt_len, scfg):
  if not scfg.cfg_scale:
    return [(x, attn)]
  uncond = x.copy()
  uncond[..., :prompt_len] = loaded.ids.mask
  return [(x, attn), (uncond, attn)]


def _guide(parts, scfg):
  if not scfg.cfg_scale:
    return parts[0]
  cond, unc = parts
  return unc + (scfg.cfg_scale + 1.0) * (cond - unc)


def _guided(loaded, x, attn, prompt_len, scfg):
  parts = [loaded.logits(v, a).astype(np.float64) for v, a in _views(loaded, x, attn,
                                                                      prompt_len, scfg)]
  return _guide(parts, scfg)


def _cached_row_logits(loaded, tokens_L, commit_L, t, t_fill, blk, attn_L, prompt_len, scfg):
  """Full-length [L, V] array holding the row's step-t logits at the block positions."""
  mask_id, L = loaded.ids.mask, tokens_L.shape[0]
  bs = prompt_len + blk * scfg.block_length
  pos = bs + np.arange(scfg.block_length)
  width = scfg.block_length if scfg.cache == "dual" else L - bs
  mask = None if attn_L is None else attn_L[None]
  now = _views(loaded, np.where(commit_L < t, tokens_L, mask_id)[None], mask, prompt_len, scfg)
  then = _views(loaded, np.where(commit_L < t_fill, tokens_L, mask_id)[None], mask,
                prompt_len, scfg)
  parts = []
  for (x, m), (x_fill, m_fill) in zip(now, then):
    if t == t_fill:
      parts.append(loaded.logits(x, m)[0, pos].astype(np.float64))
      continue
    _, kv = loaded.fill(loaded.params, x_fill, m_fill, pos[None])
    parts.append(np.asarray(loaded.window(loaded.params, x, m, kv, bs, width, bs, pos[None]),
                            np.float64)[0])
  full = np.zeros((L, parts[0].shape[-1]))
  full[pos] = _guide(parts, scfg)
  return full


def _factor_count(score_open: np.ndarray, factor: float, tol: float) -> tuple[int, int]:
  """The factor rule's n (at least one) with scores nudged by -tol and +tol."""
  ranked = np.sort(score_open)[::-1]
  n = np.arange(2, ranked.size + 2)
  count = lambda c: max(1, int(((n * (1.0 - c)) < factor).sum()))
  return count(ranked - tol), count(ranked + tol)


def _check_step(tokens, commit, logits, t, blk, b, prompt_len, scfg, tol, eos_id, mask_id,
                left=None):
  """One row's step t against the rule, given the logits the step should have seen.
  With stop_at_eos a block position after the row's first EOS that became EOS at step t
  may be a rule commit or an EOS fill: such positions count as either (`maybe_fill`).
  `left` (fixed_steps): the block's steps left, this one included."""
  logits = logits.copy()
  logits[..., mask_id] = -np.inf
  pos = prompt_len + blk * scfg.block_length + np.arange(scfg.block_length)
  now = commit[pos] == t
  maybe_fill = np.zeros_like(now)
  if scfg.stop_at_eos:
    first = _check_eos_fill(tokens, commit, t, pos, prompt_len, eos_id, b)
    maybe_fill = now & (pos - prompt_len > first) & (tokens[pos] == eos_id)
  else:
    assert (commit == t).sum() == now.sum(), f"step {t} row {b}: commit outside block {blk}"
  rule = now & ~maybe_fill  # surely committed by the rule
  is_open = commit[pos] >= t
  assert is_open.any(), f"step {t} row {b}: a step with nothing to do was counted"
  x0 = logits[pos].argmax(-1)
  np.testing.assert_array_equal(tokens[pos][rule], x0[rule],
                                err_msg=f"step {t} row {b}: committed token is not argmax")
  lo, hi = rule.sum(), now.sum()  # how many the rule committed: between these
  if not scfg.adaptive:
    want = min(tokens_per_step(scfg)[t], is_open.sum())
    assert lo <= want <= hi, (t, b, lo, hi, want)
  else:
    assert hi >= 1, (t, b)
  least = 1  # the commits the rule forces whatever the scores
  if left is not None:
    assert left >= 1, f"step {t} row {b}: block {blk} ran past its steps"
    least = max(1, -(-int(is_open.sum()) // left))
    assert hi >= least, f"step {t} row {b}: {hi} commits, fewer than {least} to end on time"
  if scfg.remasking == "random":
    return
  score = remasking_score(logits[pos], x0, scfg.remasking)
  waiting = is_open & ~now
  if waiting.any() and rule.any():
    assert score[rule].min() >= score[waiting].max() - tol, (
        f"step {t} row {b}: an uncommitted position outranks a committed one")
  if scfg.threshold is not None:
    assert (score[waiting] < scfg.threshold + tol).all(), (t, b)
    below = rule & (score < scfg.threshold - tol)
    assert below.sum() <= (least if hi <= least else 0), (
        f"step {t} row {b}: committed below the threshold beyond the forced commits")
  if scfg.factor is not None:
    f_lo, f_hi = sorted(_factor_count(score[is_open], scfg.factor, tol))
    f_lo, f_hi = max(f_lo, least), max(f_hi, least)
    assert f_lo <= hi and lo <= f_hi, (
        f"step {t} row {b}: factor rule wants {f_lo}..{f_hi} commits, got {lo}..{hi}")


def _check_eos_fill(tokens, commit, t, pos, prompt_len, eos_id, b) -> int:
  """stop_at_eos: the commits of step t outside the block's own are EOS, after the row's
  first EOS committed by then, and after that EOS nothing is left open. Returns that
  EOS's response index (the response length if there is none yet)."""
  gen_tok, gen_commit = tokens[prompt_len:], commit[prompt_len:]
  eos_by_t = np.flatnonzero((gen_tok == eos_id) & (gen_commit <= t))
  in_block = np.zeros(gen_tok.shape, bool)
  in_block[pos - prompt_len] = True
  filled = (gen_commit == t) & ~in_block
  if eos_by_t.size == 0:
    assert not filled.any(), f"step {t} row {b}: filled without an EOS"
    return gen_tok.size
  first = eos_by_t[0]
  idx = np.arange(gen_tok.size)
  assert (gen_tok[filled] == eos_id).all() and (idx[filled] > first).all(), (t, b)
  assert (gen_commit[idx > first] <= t).all(), f"step {t} row {b}: open after the first EOS"
  return first
