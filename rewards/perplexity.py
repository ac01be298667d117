"""Perplexity reward R_ppl (method.md §2): R_ppl = (C - min(PPL, C)) / F, C = F = 100.

An autoregressive scorer reads the response's committed tokens in order (still-masked
positions are skipped: DECISION in method.md) after the prompt. Two scorers:

- `CausalLMScorer`: a causal model of this project's family sharing the sampler's
  tokenizer. It runs inside jit on the same token ids (one causal forward per sequence
  per scoring point, usually far smaller than the mask predictor).
- `TextScorer`: any scorer with its own tokenizer. It works on text, so the search
  leaves the compiled program once per scoring point to decode, re-tokenise and score
  (a host round trip plus a separate forward per group; see docs/search.md, "The rewards").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.transformer import ModelApply


def ppl_reward(logp_sum, count, cap: float = 100.0, scale: float = 100.0):
  """(C - min(PPL, C)) / F with PPL = exp(-mean log p); 0 where nothing is scored."""
  ppl = jnp.exp(-logp_sum / jnp.maximum(count, 1))
  return jnp.where(count > 0, (cap - jnp.minimum(ppl, cap)) / scale, 0.0)


def compact_committed(tokens_BL, committed_BL, resp_start: int, fill_id: int):
  """Response tokens that are committed, moved to the front of the response window in
  their original order; (compacted tokens [B, L], count [B])."""
  resp_tok, resp_ok = tokens_BL[:, resp_start:], committed_BL[:, resp_start:]
  order = jnp.argsort(~resp_ok, axis=1, stable=True)
  packed = jnp.take_along_axis(resp_tok, order, axis=1)
  count = resp_ok.sum(axis=1)
  packed = jnp.where(jnp.arange(packed.shape[1]) < count[:, None], packed, fill_id)
  return jnp.concatenate([tokens_BL[:, :resp_start], packed], axis=1), count


@dataclasses.dataclass(frozen=True)
class CausalLMScorer:
  """In-jit scorer: a causal model (`apply`, hashable) whose params are passed at call."""

  apply: Any

  def response_logp(self, params, tokens_BL, attn_mask_BL, committed_BL, resp_start: int,
                    fill_id: int):
    """(sum of log p of the committed response tokens in order, their count) per row."""
    packed, count = compact_committed(tokens_BL, committed_BL, resp_start, fill_id)
    L = packed.shape[1]
    B = packed.shape[0]
    positions = jnp.broadcast_to(jnp.arange(resp_start - 1, L - 1), (B, L - resp_start))
    logits = self.apply(params, packed, attn_mask_BL, positions)
    logp = jax.nn.log_softmax(logits, axis=-1)
    logp = jnp.take_along_axis(logp, packed[:, resp_start:, None], axis=-1)[..., 0]
    scored = jnp.arange(L - resp_start) < count[:, None]
    return jnp.where(scored, logp, 0.0).sum(axis=1), count


WIDTH_BUCKET = 32


class TextScorer:
  """Host-side scorer with its own tokenizer: prompt and response text in, log p out."""

  def __init__(self, model, tokenizer):
    graphdef, self.params = nnx.split(model)
    self.scorer = CausalLMScorer(ModelApply(graphdef))
    self.tokenizer = tokenizer
    self._fn = jax.jit(self.scorer.response_logp, static_argnames=("resp_start", "fill_id"))

  def response_logp(self, prompts: Sequence[str], responses: Sequence[str]):
    """Numpy (logp_sum [B], count [B]) of each response given its prompt."""
    tok = self.tokenizer
    p_ids = [tok.encode(p) for p in prompts]
    r_ids = [tok.encode(r) for r in responses]
    # widths rounded up to a bucket, so that groups whose texts differ a little in length
    # share one compiled scorer (padding changes no score: the prompt is left-padded and
    # masked, the tail after the response is not scored, and the model is causal)
    bucket = lambda n: -(-max(n, 1) // WIDTH_BUCKET) * WIDTH_BUCKET
    P = bucket(max(len(p) for p in p_ids))
    R = bucket(max(len(r) for r in r_ids))
    tokens = np.full((len(p_ids), P + R), tok.special.pad, np.int32)
    attn = np.zeros_like(tokens, bool)
    committed = np.zeros_like(tokens, bool)
    for i, (p, r) in enumerate(zip(p_ids, r_ids)):
      tokens[i, P - len(p):P], attn[i, P - len(p):] = p, True
      tokens[i, P:P + len(r)], committed[i, P:P + len(r)] = r, True
    out = self._fn(self.params, tokens, attn, committed, resp_start=P, fill_id=tok.special.pad)
    return tuple(np.asarray(x) for x in out)
