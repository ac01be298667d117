"""The sampler as one compiled program (LLaDA's `generate()`, Dream's `diffusion_generate`
and everything between: `SamplerConfig`).

A `DecodeState` (tokens, commit step per position, per-row keys, step, per-row step count,
optional KV cache) advanced by a pure `denoise_step` inside a `lax` loop: all blocks and
steps run on device with static shapes. Each step runs the network (on the whole
sequence, or with a block KV cache on part of it: `mro/sampling/cache.py`), computes the
output layer only for the current block, draws x0 (argmax, or Gumbel-max at temperature
> 0), scores the still-masked positions of the block (`remasking`) and commits per row
through a rank mask: the schedule's top-k, everything above a threshold, or Fast-dLLM's
factor rule. A trajectory is fully described by the final tokens and `commit_step`
(method.md §1): the state of a row before its step t is `where(commit_step < t, tokens,
MASK)`.

DECISIONS beyond the reference `generate()`:
- The MASK id is never a prediction (its logit is -inf), so every masked position is
  committed exactly once and no MASK is left. The reference leaves MASK selectable; a
  trained model never picks it, and the parity fixture is built so that it cannot win.
- Only generated positions are ever committed: MASK tokens inside a prompt stay as given.
- Token correction (`SamplerConfig.correct_below`, off by default) is the one exception to
  "a committed token is never re-masked": tokens whose leave-one-out probability is low
  are re-masked after their step (`correct_tokens`), each position at most once.
- Steps are counted per row (`row_step`: the steps that worked on the row, its NFE), and
  randomness is per row (`fold_in(row_key, row_step)`), so a row's result does not depend
  on what else is in the batch, even when rows wait for each other (caches) or stop early.
  Without waiting and stopping, a row's step is the loop's step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from models.logprobs import loo_logprobs
from models.sharding import place_params, shard_batch
from models.transformer import ModelApply  # noqa: F401  (re-exported for callers)
from mro.messages import quoted
from mro.sampling.cache import KVCache, cache_rows, cached_logits, check_cacheable, new_cache
from mro.sampling.schedule import SamplerConfig, block_of_step, tokens_per_step

NOT_COMMITTED = 2**30  # commit_step of a position that is still MASK
PROMPT = -1  # commit_step of prompt positions (visible at every step)

# apply(params, tokens_BL, attention_mask_BL | None, positions_BK) -> logits_BKV (float32);
# with a cache it also needs fill / window / cache_shape (models.transformer.ModelApply).
ApplyFn = Callable[[Any, jax.Array, jax.Array | None, jax.Array], jax.Array]


class Correction(NamedTuple):
  """Token correction's bookkeeping (SamplerConfig.correct_below)."""
  remasked: jax.Array  # bool[B, L]: positions re-masked once (never verified again)
  rows: jax.Array  # int32[B]: leave-one-out rows run for each row (its extra NFE)
  passes: jax.Array  # int32[]: steps at which the leave-one-out rows ran


def new_correction(rows: int, length: int, cfg: SamplerConfig) -> Correction | None:
  if not cfg.correcting:
    return None
  return Correction(jnp.zeros((rows, length), bool), jnp.zeros((rows,), jnp.int32),
                    jnp.zeros((), jnp.int32))


class DecodeState(NamedTuple):
  tokens: jax.Array  # int32[B, L]: prompt + response (MASK where not yet committed)
  commit_step: jax.Array  # int32[B, L]: PROMPT, the row's step index, or NOT_COMMITTED
  keys: jax.Array  # [B] per-row PRNG keys
  step: jax.Array  # int32[]: index of the next step of the loop (batch forward passes)
  row_step: jax.Array | None = None  # int32[B]: steps that worked on each row so far
  cache: KVCache | None = None  # block KV cache (SamplerConfig.cache), None without one
  correction: Correction | None = None  # token correction's record, None without it


class GenerateOutput(NamedTuple):
  tokens: jax.Array  # int32[B, P + G]
  commit_step: jax.Array  # int32[B, P + G]
  nfe: jax.Array  # int32[]: network evaluations (forward passes over the batch)
  nfe_per_row: jax.Array | None = None  # int32[B]: forward passes that decoded each row
  # token correction (None when off): batch-sized passes of its leave-one-out rows
  # (included in nfe), and the tokens re-masked in each row
  correction_nfe: jax.Array | None = None  # int32[]
  remasked: jax.Array | None = None  # int32[B]


def state_at(tokens_BL, commit_step_BL, t, mask_id: int):
  """The sequence the sampler saw before step t (prompt always visible)."""
  return jnp.where(commit_step_BL < t, tokens_BL, mask_id)


def init_state(prompt_BP, gen_length: int, keys, mask_id: int,
               cache: KVCache | None = None,
               correction: Correction | None = None) -> DecodeState:
  B, P = prompt_BP.shape
  tokens = jnp.concatenate([prompt_BP, jnp.full((B, gen_length), mask_id, prompt_BP.dtype)], 1)
  commit = jnp.concatenate([jnp.full((B, P), PROMPT, jnp.int32),
                            jnp.full((B, gen_length), NOT_COMMITTED, jnp.int32)], 1)
  return DecodeState(tokens.astype(jnp.int32), commit, keys, jnp.zeros((), jnp.int32),
                     jnp.zeros((B,), jnp.int32), cache, correction)


def map_rows(state: DecodeState, fn) -> DecodeState:
  """`state` with `fn` ([B, ...] -> [B', ...], e.g. a gather) applied to every per-row
  array: tokens, commit steps, step counts, the cache rows and token correction's record.
  Keys are left to the caller (who usually draws new ones)."""
  corr = state.correction
  if corr is not None:
    corr = corr._replace(remasked=fn(corr.remasked), rows=fn(corr.rows))
  return state._replace(tokens=fn(state.tokens), commit_step=fn(state.commit_step),
                        row_step=fn(state.row_step), cache=cache_rows(state.cache, fn),
                        correction=corr)


def row_keys(key, batch: int, row_ids=None):
  """One key per row; pass stable `row_ids` (e.g. example indices) for batch invariance."""
  if row_ids is None:
    row_ids = jnp.arange(batch)
  return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.asarray(row_ids, jnp.uint32))


def _per_row(step, keys_B):
  return jnp.broadcast_to(jnp.asarray(step), keys_B.shape)


def confidence(logits_BKV, x0_BK, remasking: str, keys_B, step):
  """Higher = commit earlier. Probabilities for `low_confidence` (usable with a threshold).
  `step`: the rows' step (a scalar or one per row), which seeds `random`."""
  if remasking == "random":
    draw = lambda k, t: jax.random.uniform(jax.random.fold_in(jax.random.fold_in(k, t), 1),
                                           x0_BK.shape[1:])
    return jax.vmap(draw)(keys_B, _per_row(step, keys_B))
  probs = jax.nn.softmax(logits_BKV, axis=-1)
  if remasking in ("low_confidence", "maskgit_plus"):  # Dream's name for the same rule
    return jnp.take_along_axis(probs, x0_BK[..., None], axis=-1)[..., 0]
  if remasking in ("margin", "topk_margin"):
    top2 = jax.lax.top_k(probs, 2)[0]
    return top2[..., 0] - top2[..., 1]
  if remasking == "entropy":
    logp = jax.nn.log_softmax(logits_BKV, axis=-1)
    return jnp.sum(jnp.where(probs > 0, probs * logp, 0.0), axis=-1)  # negative entropy
  raise ValueError(f"unknown remasking {quoted(remasking)}")


def sample_x0(logits_BKV, temperature: float, keys_B, step):
  """argmax at temperature 0, else Gumbel-max on logits / temperature (per-row noise,
  seeded by each row's step: a scalar or one per row)."""
  if temperature == 0:
    return jnp.argmax(logits_BKV, axis=-1).astype(jnp.int32)
  noise_dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
  gumbel = jax.vmap(lambda k, t: jax.random.gumbel(jax.random.fold_in(k, t),
                                                   logits_BKV.shape[1:], noise_dtype))(
                                                       keys_B, _per_row(step, keys_B))
  scores = logits_BKV.astype(noise_dtype) / temperature + gumbel
  return jnp.argmax(scores, axis=-1).astype(jnp.int32)


def rank_mask(scores_BK, k_B):
  """True at each row's k highest scores (rank < k), ties to the lower index."""
  order = jnp.argsort(-scores_BK, axis=-1, stable=True)
  ranks = jnp.argsort(order, axis=-1)
  return ranks < k_B[:, None]


def on_time(is_open_BK, step, cfg: SamplerConfig):
  """int32[B]: the fewest commits this step that still end the block within its steps:
  ceil(masked left / steps left in the block)."""
  left = cfg.steps_per_block - step % cfg.steps_per_block
  return -(-is_open_BK.sum(-1) // left)


def commit_mask(conf_BK, is_open_BK, step, cfg: SamplerConfig):
  """Which open positions of the block each row commits now (at least one if any)."""
  B, K = conf_BK.shape
  least = jnp.ones((B,), jnp.int32)
  if cfg.fixed_steps:  # an adaptive rule kept to the steps
    least = jnp.maximum(least, on_time(is_open_BK, step, cfg))
  if cfg.threshold is not None:
    return ((conf_BK >= cfg.threshold) | rank_mask(conf_BK, least)) & is_open_BK
  if cfg.factor is not None:  # n most confident with (n + 1)(1 - c_n) < f (monotone in n)
    ranked = -jnp.sort(-conf_BK, axis=-1)
    ok = (jnp.arange(2, K + 2) * (1.0 - ranked)) < cfg.factor
    return rank_mask(conf_BK, jnp.maximum(ok.sum(-1), least)) & is_open_BK
  k = jnp.broadcast_to(jnp.asarray(tokens_per_step(cfg))[step], (B,))
  if cfg.correcting:  # re-masked tokens join the rest: at least ceil(masked / steps left),
    # so the block still ends complete; without re-masks the schedule's k is never less
    k = jnp.maximum(k, on_time(is_open_BK, step, cfg))
  return rank_mask(conf_BK, k) & is_open_BK


def _first_open_block(state: DecodeState, prompt_len: int, cfg: SamplerConfig):
  """int32[B]: each row's first block with a MASK left (num_blocks when none)."""
  open_BN = (state.commit_step[:, prompt_len:] == NOT_COMMITTED).reshape(
      -1, cfg.num_blocks, cfg.block_length).any(-1)
  return jnp.where(open_BN.any(-1), jnp.argmax(open_BN, axis=-1), cfg.num_blocks)


def current_block(state: DecodeState, prompt_len: int, cfg: SamplerConfig):
  """int32[B]: block each row works on at this step. Fixed schedule: the step's block.
  Adaptive rules: each row's first block with a MASK left; with a cache (lockstep) the
  first block any row still has open, for every row (rows that finished it wait)."""
  if cfg.step_bound:
    b = jnp.asarray(block_of_step(cfg))[jnp.minimum(state.step, cfg.steps - 1)]
    return jnp.broadcast_to(b, state.tokens.shape[:1])
  first = jnp.minimum(_first_open_block(state, prompt_len, cfg), cfg.num_blocks - 1)
  if cfg.lockstep:
    return jnp.broadcast_to(first.min(), first.shape)
  return first.astype(jnp.int32)


def _views(tokens, attn_mask, positions, prompt_len: int, cfg: SamplerConfig, mask_id: int):
  """The rows the network sees: the sequences, and under guidance their unconditional
  copies (prompt replaced by MASK) after them."""
  if cfg.cfg_scale == 0:
    return tokens, attn_mask, positions
  uncond = tokens.at[:, :prompt_len].set(mask_id)
  return (jnp.concatenate([tokens, uncond]),
          None if attn_mask is None else jnp.concatenate([attn_mask, attn_mask]),
          jnp.concatenate([positions, positions]))


def block_logits(apply, params, state: DecodeState, attn_mask, positions, block,
                 prompt_len: int, cfg: SamplerConfig, mask_id: int):
  """(guided logits [B, block_length, V] at `positions`, the cache after this step)."""
  tokens, mask, pos = _views(state.tokens, attn_mask, positions, prompt_len, cfg, mask_id)
  if cfg.cache == "none":
    logits, cache = apply(params, tokens, mask, pos), None
  else:
    logits, cache = cached_logits(apply, params, tokens, mask, pos, state.cache, block,
                                  prompt_len, cfg)
  if cfg.cfg_scale == 0:
    return logits, cache
  cond, unc = jnp.split(logits, 2)
  return unc + (cfg.cfg_scale + 1.0) * (cond - unc), cache


def eos_fill(tokens_BL, commit_step_BL, row_step_B, prompt_len: int, eos_id: int):
  """Commits EOS (at the row's current step) at every still-masked response position after
  the first committed EOS of the row."""
  resp, resp_step = tokens_BL[:, prompt_len:], commit_step_BL[:, prompt_len:]
  G = resp.shape[1]
  done_eos = (resp == eos_id) & (resp_step != NOT_COMMITTED)
  first = jnp.min(jnp.where(done_eos, jnp.arange(G), G), axis=1)
  after = (jnp.arange(G)[None] > first[:, None]) & (resp_step == NOT_COMMITTED)
  tokens = tokens_BL.at[:, prompt_len:].set(jnp.where(after, eos_id, resp))
  commit = commit_step_BL.at[:, prompt_len:].set(jnp.where(after, row_step_B[:, None],
                                                           resp_step))
  return tokens, commit


def correct_tokens(apply, params, tokens_BL, commit_step_BL, corr: Correction, attn_mask,
                   positions_BK, committed_BK, conf_BK, active_B, step, cfg: SamplerConfig,
                   mask_id: int):
  """Token correction after a step: the `verify_rows` least confident tokens the step
  committed (never a re-masked position again) are re-predicted with only their own
  position masked; those below `correct_below` (at most `correct_max` per row, the least
  likely first) go back to MASK / NOT_COMMITTED. Only positions of the current block are
  candidates, so the prompt is never touched. Returns (tokens, commit_step, correction)."""
  B = tokens_BL.shape[0]
  R = cfg.verify_rows
  done = jnp.take_along_axis(corr.remasked, positions_BK, axis=1)
  top, idx = jax.lax.top_k(jnp.where(committed_BK & ~done, -conf_BK, -jnp.inf), R)
  valid = top > -jnp.inf
  pos = jnp.take_along_axis(positions_BK, idx, axis=1)  # [B, R], distinct per row
  allowed = jnp.any(valid)
  if not cfg.adaptive:  # a block's last step must leave it complete
    allowed = allowed & (step % cfg.steps_per_block != cfg.steps_per_block - 1)

  def run(_):
    logp = loo_logprobs(apply, params, tokens_BL, attn_mask, pos, mask_id)
    bad = valid & (logp < jnp.log(cfg.correct_below))
    return rank_mask(jnp.where(bad, -logp, -jnp.inf),
                     jnp.full((B,), cfg.correct_max, jnp.int32)) & bad

  remask = jax.lax.cond(allowed, run, lambda _: jnp.zeros(pos.shape, bool), None)
  rows = jnp.arange(B)[:, None]
  tokens = tokens_BL.at[rows, pos].set(jnp.where(remask, mask_id, tokens_BL[rows, pos]))
  commit_step = commit_step_BL.at[rows, pos].set(
      jnp.where(remask, NOT_COMMITTED, commit_step_BL[rows, pos]))
  # A row's own count: the R rows it would need alone (any candidate of its own, and not a
  # block's last step), whatever the other rows of the batch did.
  own = valid.any(-1) & allowed & (active_B > 0)
  corr = Correction(corr.remasked.at[rows, pos].set(corr.remasked[rows, pos] | remask),
                    corr.rows + R * own.astype(jnp.int32), corr.passes + allowed.astype(jnp.int32))
  return tokens, commit_step, corr


def denoise_step(apply: ApplyFn, params, state: DecodeState, attn_mask, prompt_len: int,
                 cfg: SamplerConfig, mask_id: int, eos_id: int | None = None) -> DecodeState:
  """One denoising step for every row (pure; the loop lives in `run_steps`)."""
  block = current_block(state, prompt_len, cfg)
  positions = prompt_len + block[:, None] * cfg.block_length + jnp.arange(cfg.block_length)
  logits, cache = block_logits(apply, params, state, attn_mask, positions, block[0],
                               prompt_len, cfg, mask_id)
  logits = logits.at[..., mask_id].set(-jnp.inf)
  row_step = state.row_step
  x0 = sample_x0(logits, cfg.temperature, state.keys, row_step)
  conf = confidence(logits, x0, cfg.remasking, state.keys, row_step)
  is_open = jnp.take_along_axis(state.commit_step, positions, axis=1) == NOT_COMMITTED
  conf = jnp.where(is_open, conf, -jnp.inf)
  commit = commit_mask(conf, is_open, state.step, cfg)
  rows = jnp.arange(state.tokens.shape[0])[:, None]
  old_tok = jnp.take_along_axis(state.tokens, positions, axis=1)
  old_step = jnp.take_along_axis(state.commit_step, positions, axis=1)
  tokens = state.tokens.at[rows, positions].set(jnp.where(commit, x0, old_tok))
  commit_step = state.commit_step.at[rows, positions].set(
      jnp.where(commit, row_step[:, None], old_step))
  active = is_open.any(-1).astype(jnp.int32)
  correction = state.correction
  if cfg.correcting:
    tokens, commit_step, correction = correct_tokens(
        apply, params, tokens, commit_step, correction, attn_mask, positions, commit, conf,
        active, state.step, cfg, mask_id)
  if cfg.stop_at_eos:
    if eos_id is None:
      raise ValueError("stop_at_eos needs the EOS token id (eos_id)")
    tokens, commit_step = eos_fill(tokens, commit_step, row_step, prompt_len, eos_id)
  return DecodeState(tokens, commit_step, state.keys, state.step + 1, row_step + active, cache,
                     correction)


def run_steps(apply: ApplyFn, params, state: DecodeState, attn_mask, prompt_len: int,
              cfg: SamplerConfig, mask_id: int, stop=None,
              eos_id: int | None = None) -> DecodeState:
  """Advances `state` to step `stop` (default: the end) inside one lax loop.

  Fixed schedule (or fixed_steps): runs steps state.step .. stop-1. Adaptive rules and
  `stop_at_eos`: run until no row has a MASK left in its response (or `stop` steps).
  """
  step_fn = functools.partial(denoise_step, apply, params, attn_mask=attn_mask,
                              prompt_len=prompt_len, cfg=cfg, mask_id=mask_id, eos_id=eos_id)
  stop = cfg.max_steps if stop is None else stop
  if cfg.step_bound and not cfg.stop_at_eos:
    return jax.lax.fori_loop(state.step, stop, lambda _, s: step_fn(s), state)

  def unfinished(s: DecodeState):
    return (s.step < stop) & jnp.any(s.commit_step[:, prompt_len:] == NOT_COMMITTED)

  return jax.lax.while_loop(unfinished, step_fn, state)


def response_attention(prompt_mask_BP, gen_length: int):
  """bool[B, P + gen_length]: a left-padded prompt's mask followed by the response (always
  attended), or None without a prompt mask."""
  if prompt_mask_BP is None:
    return None
  B = prompt_mask_BP.shape[0]
  return jnp.concatenate([prompt_mask_BP.astype(bool), jnp.ones((B, gen_length), bool)], axis=1)


@functools.partial(jax.jit, static_argnames=("apply", "cfg", "mask_id", "eos_id"))
def generate_compiled(apply, params, prompt_BP, prompt_mask_BP, keys, cfg, mask_id,
                      eos_id=None):
  """The jitted core of `generate` (no input checks, no placement): what `mro plan`
  lowers on abstract shapes. Prefer `generate`."""
  B, P = prompt_BP.shape
  attn_mask = response_attention(prompt_mask_BP, cfg.gen_length)
  cache = new_cache(apply, params, B, P + cfg.gen_length, cfg)
  state = init_state(prompt_BP, cfg.gen_length, keys, mask_id, cache,
                     new_correction(B, P + cfg.gen_length, cfg))
  state = run_steps(apply, params, state, attn_mask, P, cfg, mask_id, eos_id=eos_id)
  corr = state.correction
  extra = () if corr is None else (corr.passes * cfg.verify_rows, corr.remasked.sum(-1))
  return GenerateOutput(state.tokens, state.commit_step, *network_passes(state, cfg), *extra)


def network_passes(state: DecodeState, cfg: SamplerConfig):
  """(forward passes over the batch, forward passes per row): denoising steps (twice with
  guidance) plus token correction's leave-one-out rows."""
  views = 2 if cfg.cfg_scale else 1
  nfe, per_row = state.step * views, state.row_step * views
  if state.correction is not None:
    nfe = nfe + state.correction.passes * cfg.verify_rows
    per_row = per_row + state.correction.rows
  return nfe, per_row


def check_lengths(prompt_len: int, cfg: SamplerConfig, max_seq_len: int) -> None:
  if prompt_len + cfg.gen_length > max_seq_len:
    raise ValueError(
        f"prompt length {prompt_len} + gen_length {cfg.gen_length} = "
        f"{prompt_len + cfg.gen_length} exceeds the model's max_seq_len={max_seq_len}")


def check_options(apply, cfg: SamplerConfig, eos_id: int | None) -> None:
  """ValueError for options the call cannot serve: a cache without a cache-aware network,
  stop_at_eos without the EOS id."""
  if cfg.cache != "none":
    check_cacheable(apply)
  if cfg.stop_at_eos and eos_id is None:
    raise ValueError("stop_at_eos needs the EOS token id: pass eos_id")


def generate(apply: ApplyFn, params, prompt_BP, cfg: SamplerConfig, *, mask_id: int,
             max_seq_len: int, key=None, row_ids=None, prompt_mask_BP=None,
             mesh=None, eos_id: int | None = None) -> GenerateOutput:
  """Samples gen_length tokens after each (left-padded) prompt; one compiled call.

  prompt_mask_BP: 1 = real token, 0 = left padding (None = no padding).
  row_ids: stable ids for the per-row random streams (default 0..B-1).
  eos_id: the EOS token id (needed by `cfg.stop_at_eos`).
  mesh: run sharded: weights by their logical axes, rows over (data, fsdp); the batch
    must divide data x fsdp. The same program (jit propagates the shardings; activations
    are left to XLA, which keeps weights in place rather than gathering them each step);
    with several processes each passes the same prompts and gets global output arrays.
  """
  prompt_BP = jnp.asarray(prompt_BP, jnp.int32)
  if prompt_BP.ndim != 2 or prompt_BP.shape[1] == 0:
    raise ValueError(f"prompts must be a non-empty [batch, length] array, got shape "
                     f"{prompt_BP.shape}")
  if prompt_BP.shape[0] == 0:
    raise ValueError("the batch has no prompts")
  check_lengths(prompt_BP.shape[1], cfg, max_seq_len)
  check_options(apply, cfg, eos_id)
  if prompt_mask_BP is not None:
    prompt_mask_BP = jnp.asarray(prompt_mask_BP)
    if prompt_mask_BP.shape != prompt_BP.shape:
      raise ValueError(f"prompt mask shape {prompt_mask_BP.shape} != prompt shape "
                       f"{prompt_BP.shape}")
    empty = np.flatnonzero(~np.asarray(prompt_mask_BP).astype(bool).any(axis=1))
    if empty.size:
      raise ValueError(f"prompt row(s) {empty.tolist()} have no real token (all padding)")
  key = jax.random.key(0) if key is None else key
  keys = row_keys(key, prompt_BP.shape[0], row_ids)
  if mesh is not None:
    params = place_params(params, mesh)
    prompt_BP, prompt_mask_BP, keys = shard_batch((prompt_BP, prompt_mask_BP, keys), mesh)
  return generate_compiled(apply, params, prompt_BP, prompt_mask_BP, keys, cfg, mask_id,
                           eos_id)


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Token lists -> (int32[B, P] left-padded, int32[B, P] mask with 1 = real)."""
  if not rows or any(len(r) == 0 for r in rows):
    raise ValueError("every prompt must have at least one token")
  width = max(len(r) for r in rows)
  tokens = np.full((len(rows), width), pad_id, np.int32)
  mask = np.zeros((len(rows), width), np.int32)
  for i, r in enumerate(rows):
    tokens[i, width - len(r):] = r
    mask[i, width - len(r):] = 1
  return tokens, mask
