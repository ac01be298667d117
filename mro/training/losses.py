"""Training objectives. Each is `loss_fn(apply, params, batch, key) -> (loss, metrics)` and
plugs into the one train step of mro/training/step.py.

Masked diffusion (method.md §1): draw t ~ U(0, 1) per sequence, p_mask = (1 - eps) t + eps,
mask each eligible token with probability p_mask, and weight the cross-entropy of the
masked tokens by 1 / p_mask.
- pretraining: every position is eligible; loss = sum / (B * L).
- SFT: only response positions are eligible (the prompt is never masked); each row is
  normalised by its response length; loss = mean over rows. The EOS padding that fills
  the response window is a target too (LLaDA trains on it so that the model learns to
  end; `DataConfig.train_on_padding_eos=False` excludes it, the batch then marks those
  positions as not eligible and not counted in the response length).

Batches (built by mro/training/data.py):
  tokens     int32[B, L]   clean sequence (left-padded prompt, response, EOS padding)
  attn_mask  bool[B, L]    False on left padding
  eligible   bool[B, L]    positions that may be masked (response, or everything)
The SFT response window starts at a fixed column `resp_start` (the padded prompt width,
a static argument): the output layer is only evaluated from there on, never on prompt
positions. With `chunk` > 0 (`data.loss_chunk`) it is evaluated only on chunks holding
masked positions, never all at once (`chunked_masked_ce`): the same loss, less memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mro.messages import quoted

OBJECTIVES = ("sft", "pretrain", "ar")


def token_ce(logits_BKV, targets_BK):
  """Natural-log cross-entropy per position over the full vocabulary (float32)."""
  logits = logits_BKV.astype(jnp.float32)
  gold = jnp.take_along_axis(logits, targets_BK[..., None], axis=-1)[..., 0]
  return jax.nn.logsumexp(logits, axis=-1) - gold


def draw_mask(key, eligible_BL, eps: float):
  """(mask_BL, p_mask_B): t ~ U(0,1), p = (1-eps) t + eps, Bernoulli(p) on eligible tokens."""
  k_t, k_m = jax.random.split(key)
  B, L = eligible_BL.shape
  t = jax.random.uniform(k_t, (B,))
  p_mask = (1.0 - eps) * t + eps
  mask = (jax.random.uniform(k_m, (B, L)) < p_mask[:, None]) & eligible_BL
  return mask, p_mask


def weighted_masked_ce(apply, params, noisy_BL, clean_BL, mask_BL, p_mask_B, attn_mask_BL,
                       start: int = 0):
  """Per-row sum over masked positions of CE / p_mask, with logits only from `start` on."""
  positions = jnp.broadcast_to(jnp.arange(start, noisy_BL.shape[1]),
                               (noisy_BL.shape[0], noisy_BL.shape[1] - start))
  logits = apply(params, noisy_BL, attn_mask_BL, positions)
  ce = token_ce(logits, clean_BL[:, start:])
  ce = jnp.where(mask_BL[:, start:], ce, 0.0)
  return ce.sum(axis=1) / p_mask_B, ce


def chunked_masked_ce(apply, params, noisy_BL, clean_BL, mask_BL, attn_mask_BL, start: int,
                      chunk: int):
  """Per-row sum over masked positions (from `start` on) of the CE, with the output layer
  run only where it is needed: each row's masked positions are moved to the front, the
  window is cut into chunks of `chunk` positions visited by a `lax.scan`, a chunk in which
  no row has a masked position left is skipped (`lax.cond`), and a visited chunk is
  recomputed in the backward pass (`jax.checkpoint`). So at most [B, chunk, V] logits
  exist at a time, and the output layer costs B * chunk * ceil(max_r masked_r / chunk)
  positions instead of B * window. Rows never mix, so a data-sharded batch stays local.
  `apply` must offer `hidden` and `head` (models.transformer.ModelApply does)."""
  if not (hasattr(apply, "hidden") and hasattr(apply, "head")):
    raise ValueError("a chunked loss needs an apply with .hidden and .head (ModelApply)")
  h = apply.hidden(params, noisy_BL, attn_mask_BL)[:, start:]
  B, W, D = h.shape
  chunk = min(chunk, W)
  n = -(-W // chunk)
  is_masked = mask_BL[:, start:]
  order = jnp.argsort(~is_masked, axis=1, stable=True)  # masked positions first
  order = jnp.pad(order, ((0, 0), (0, n * chunk - W)))  # padding: position 0, weight 0
  keep = jnp.take_along_axis(is_masked, order, 1) & (jnp.arange(n * chunk) < W)
  target = jnp.take_along_axis(clean_BL[:, start:], order, 1)
  h = jnp.take_along_axis(h, order[..., None], 1)
  chunks = lambda x: x.reshape(B, n, chunk, *x.shape[2:]).swapaxes(0, 1)

  @jax.checkpoint
  def chunk_ce(params, h_BCD, target_BC, keep_BC):
    return jnp.where(keep_BC, token_ce(apply.head(params, h_BCD), target_BC), 0.0).sum(1)

  def body(total_B, xs):
    skip = lambda *_: jnp.zeros((B,), jnp.float32)
    return total_B + jax.lax.cond(xs[2].any(), chunk_ce, skip, params, *xs), None

  total, _ = jax.lax.scan(body, jnp.zeros((B,), jnp.float32),
                          (chunks(h), chunks(target), chunks(keep)))
  return total


def _per_row_ce(apply, params, noisy_BL, clean_BL, mask_BL, p_mask_B, attn_mask_BL, start,
                chunk):
  if chunk:
    return chunked_masked_ce(apply, params, noisy_BL, clean_BL, mask_BL, attn_mask_BL, start,
                             chunk) / p_mask_B
  return weighted_masked_ce(apply, params, noisy_BL, clean_BL, mask_BL, p_mask_B, attn_mask_BL,
                            start)[0]


def mdm_loss_given_mask(apply, params, clean_BL, mask_BL, p_mask_B, mask_id: int,
                        attn_mask_BL=None, chunk: int = 0):
  """Pretraining loss for a given mask (the fixture's `loss_pretrain`). `chunk` > 0: the
  same value from `chunked_masked_ce` (output layer on masked positions only)."""
  noisy = jnp.where(mask_BL, mask_id, clean_BL)
  per_row = _per_row_ce(apply, params, noisy, clean_BL, mask_BL, p_mask_B, attn_mask_BL, 0,
                        chunk)
  return per_row.sum() / clean_BL.size


def sft_loss_given_mask(apply, params, clean_BL, mask_BL, p_mask_B, answer_len_B, mask_id: int,
                        attn_mask_BL=None, resp_start: int = 0, chunk: int = 0):
  """SFT loss for a given mask (the fixture's `loss`); `chunk` as in mdm_loss_given_mask."""
  noisy = jnp.where(mask_BL, mask_id, clean_BL)
  per_row = _per_row_ce(apply, params, noisy, clean_BL, mask_BL, p_mask_B, attn_mask_BL,
                        resp_start, chunk)
  return jnp.mean(per_row / answer_len_B)


def ar_loss(apply, params, batch, resp_start: int):
  """Next-token cross-entropy of a causal LM on the response window (the perplexity
  scorer's objective): logits at position i predict token i + 1; mean over targets."""
  tokens, B = batch["tokens"], batch["tokens"].shape[0]
  L = tokens.shape[1]
  positions = jnp.broadcast_to(jnp.arange(resp_start - 1, L - 1), (B, L - resp_start))
  logits = apply(params, tokens, batch["attn_mask"], positions)
  weight = batch["eligible"][:, resp_start:].astype(jnp.float32)
  ce = token_ce(logits, tokens[:, resp_start:]) * weight
  return ce.sum() / jnp.maximum(weight.sum(), 1.0)


def make_mdm_loss(mask_id: int, eps: float = 1e-3, objective: str = "sft",
                  resp_start: int = 0, chunk: int = 0):
  """The training objective as a pluggable loss function: masked diffusion ("sft",
  "pretrain") or, for a causal model, next-token prediction ("ar"). `chunk` > 0 computes
  the masked-diffusion CE with `chunked_masked_ce` (same value, less memory)."""
  if objective not in OBJECTIVES:
    raise ValueError(f"unknown objective {quoted(objective)}; choose one of {OBJECTIVES}")
  if chunk < 0:
    raise ValueError(f"the loss chunk must be >= 0 (0 = off), got {chunk}")
  if objective == "ar":
    if resp_start < 1:
      raise ValueError("the 'ar' objective needs a prompt before the response (resp_start >= 1)")
    return lambda apply, params, batch, key: (ar_loss(apply, params, batch, resp_start),
                                              {"tokens": batch["attn_mask"].sum()})

  def loss_fn(apply, params, batch, key):
    mask, p_mask = draw_mask(key, batch["eligible"], eps)
    if objective == "pretrain":
      loss = mdm_loss_given_mask(apply, params, batch["tokens"], mask, p_mask, mask_id,
                                 batch["attn_mask"], chunk)
    else:
      answer_len = jnp.maximum(batch["eligible"].sum(axis=1), 1)
      loss = sft_loss_given_mask(apply, params, batch["tokens"], mask, p_mask, answer_len,
                                 mask_id, batch["attn_mask"], resp_start, chunk)
    return loss, {"masked_tokens": mask.sum(), "tokens": batch["attn_mask"].sum()}

  return loss_fn
