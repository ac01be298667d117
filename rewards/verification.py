"""Token-verification reward R_tv (method.md §2): intra-sequence correlation.

After a group of denoising steps commits some positions, pick `n_verify` of them per
sequence, re-mask each one ALONE in the new state, and ask the same mask predictor for
the committed token: R_tv = mean log p(token at m | state with only m re-masked). Tokens
that were committed together but do not agree with each other get low scores. The
leave-one-out passes are batched as B * n_verify extra rows of one forward pass, and the
output layer is evaluated only at the re-masked position of each row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pick_positions(keys_B, candidates_BL, n: int):
  """(positions [B, n], valid [B, n]): n distinct random positions among the True ones
  of each row (valid=False where a row has fewer than n). One key per row, so a row's
  choice does not depend on the rest of the batch."""
  L = candidates_BL.shape[1]
  scores = jax.vmap(lambda k: jax.random.uniform(k, (L,)))(keys_B)
  scores = jnp.where(candidates_BL, scores, -1.0)
  top_scores, positions = jax.lax.top_k(scores, n)
  return positions.astype(jnp.int32), top_scores >= 0.0


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
  logits = logits.at[:, mask_id].set(-jnp.inf)  # as in the sampler: MASK is no prediction
  return jax.nn.log_softmax(logits, axis=-1)[jnp.arange(B * N), gold].reshape(B, N)


def token_verification(apply, params, tokens_BL, attn_mask_BL, new_BL, keys_B, n_verify: int,
                       mask_id: int):
  """R_tv per row: mean leave-one-out log-probability of n_verify newly committed tokens.

  tokens_BL: the state after the group (MASK where still uncommitted); new_BL: positions
  committed during the group. Rows with nothing new to verify get 0.
  """
  positions, valid = pick_positions(keys_B, new_BL, n_verify)
  logp = loo_logprobs(apply, params, tokens_BL, attn_mask_BL, positions, mask_id)
  logp = jnp.where(valid, logp, 0.0)
  count = valid.sum(axis=1)
  return jnp.where(count > 0, logp.sum(axis=1) / jnp.maximum(count, 1), 0.0)
