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


def token_verification(apply, params, tokens_BL, attn_mask_BL, new_BL, keys_B, n_verify: int,
                       mask_id: int):
  """R_tv per row: mean leave-one-out log-probability of n_verify newly committed tokens.

  tokens_BL: the state after the group (MASK where still uncommitted); new_BL: positions
  committed during the group. Rows with nothing new to verify get 0.
  """
  B, L = tokens_BL.shape
  positions, valid = pick_positions(keys_B, new_BL, n_verify)
  rows = jnp.repeat(tokens_BL, n_verify, axis=0)  # [B * n, L]
  pos = positions.reshape(-1)
  gold = rows[jnp.arange(B * n_verify), pos]
  rows = rows.at[jnp.arange(B * n_verify), pos].set(mask_id)
  mask = None if attn_mask_BL is None else jnp.repeat(attn_mask_BL, n_verify, axis=0)
  logits = apply(params, rows, mask, pos[:, None])[:, 0]  # [B * n, V]
  logits = logits.at[:, mask_id].set(-jnp.inf)  # as in the sampler: MASK is no prediction
  logp = jax.nn.log_softmax(logits, axis=-1)[jnp.arange(B * n_verify), gold]
  logp = jnp.where(valid.reshape(-1), logp, 0.0).reshape(B, n_verify)
  count = valid.sum(axis=1)
  return jnp.where(count > 0, logp.sum(axis=1) / jnp.maximum(count, 1), 0.0)
