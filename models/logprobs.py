"""Log-probabilities of committed tokens under the mask predictor: of a token at a masked
position, and leave-one-out (each position re-masked alone). The sampler's token
correction and the rewards' token verification both read them."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def committed_logprobs(logits, tokens, mask_id: int):
  """log p(token) for logits [..., V] and tokens [...]; MASK is no prediction, as in the
  sampler."""
  logits = logits.at[..., mask_id].set(-jnp.inf)
  return jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), tokens[..., None],
                             axis=-1)[..., 0]


def loo_logprobs(apply, params, tokens_BL, attn_mask_BL, positions_BN, mask_id: int):
  """float32[B, N]: log p(token at m | the state with only m re-masked) for each position
  m of `positions_BN` (one leave-one-out row per position: B * N extra rows of one forward
  pass, the output layer only at the re-masked position). MASK is no prediction."""
  B, N = positions_BN.shape
  rows = jnp.repeat(tokens_BL, N, axis=0)  # [B * N, L]
  pos = positions_BN.reshape(-1)
  gold = rows[jnp.arange(B * N), pos]
  rows = rows.at[jnp.arange(B * N), pos].set(mask_id)
  mask = None if attn_mask_BL is None else jnp.repeat(attn_mask_BL, N, axis=0)
  logits = apply(params, rows, mask, pos[:, None])[:, 0]  # [B * N, V]
  return committed_logprobs(logits, gold, mask_id).reshape(B, N)
