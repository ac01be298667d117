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

from models.logprobs import committed_logprobs, loo_logprobs


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
  positions, valid = pick_positions(keys_B, new_BL, n_verify)
  logp = loo_logprobs(apply, params, tokens_BL, attn_mask_BL, positions, mask_id)
  logp = jnp.where(valid, logp, 0.0)
  count = valid.sum(axis=1)
  return jnp.where(count > 0, logp.sum(axis=1) / jnp.maximum(count, 1), 0.0)


def content_mask(response_BL, eos_id: int | None):
  """bool[B, L]: the response positions up to and including the first EOS (all of them
  without an EOS id): what a final-answer check scores; EOS padding after the answer is
  context, not content."""
  if eos_id is None:
    return jnp.ones(response_BL.shape, bool)
  is_eos = response_BL == eos_id
  before = jnp.cumsum(is_eos, axis=1) - is_eos  # EOS tokens strictly before each position
  return before == 0


def chunk_verification(apply, params, tokens_BL, attn_mask_BL, prompt_len: int, chunks: int,
                       mask_id: int, eos_id: int | None = None):
  """(R_tv of finished responses [B], per-position log-probabilities [B, G]).

  A cheaper token verification for a complete answer: its content positions (up to the
  first EOS) are split into `chunks` interleaved sets (response index i is in set
  i mod chunks); each set is re-masked at once in its own row, and the mask predictor
  re-predicts the committed tokens from the rest. `chunks` rows per sequence instead of
  one per position; with chunks = G every set is one position and this is the
  leave-one-out score over the whole answer. The score is the mean log-probability over
  the content positions.
  """
  B, T = tokens_BL.shape
  G = T - prompt_len
  response = tokens_BL[:, prompt_len:]
  content = content_mask(response, eos_id)
  in_set = (jnp.arange(G)[None, :] % chunks) == jnp.arange(chunks)[:, None]  # [C, G]
  hide = in_set[None] & content[:, None]  # [B, C, G]
  rows = jnp.where(hide, mask_id, response[:, None]).reshape(B * chunks, G)
  rows = jnp.concatenate([jnp.repeat(tokens_BL[:, :prompt_len], chunks, axis=0), rows], 1)
  mask = None if attn_mask_BL is None else jnp.repeat(attn_mask_BL, chunks, axis=0)
  positions = jnp.broadcast_to(prompt_len + jnp.arange(G), (B * chunks, G))
  logits = apply(params, rows, mask, positions).reshape(B, chunks, G, -1)
  logp = committed_logprobs(logits, jnp.broadcast_to(response[:, None], (B, chunks, G)),
                            mask_id)
  logp_BG = jnp.where(hide, logp, 0.0).sum(axis=1)  # each content position is in one set
  score = logp_BG.sum(axis=1) / jnp.maximum(content.sum(axis=1), 1)
  return score, logp_BG
