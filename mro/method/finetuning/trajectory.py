"""Trajectories stored as final tokens + commit step per position (method.md §1).

Rollouts of the sampler or the search are two int32 arrays of the sequence length; any
intermediate state is rebuilt inside jit: the state before step t shows the prompt and
every position committed at a step < t, MASK elsewhere. The action at step t is the set
of positions committed at t with their tokens, and its log-probability under the mask
predictor is log π(a_t | s_t) = Σ_{i committed at t} log p_θ(x_i | s_t).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mro.sampling.sampler import state_at


def step_states(tokens_BL, commit_BL, steps_BS, mask_id: int):
  """States before each chosen step: [B * S, L] (row b*S + s is step steps_BS[b, s])."""
  S = steps_BS.shape[1]
  tok = jnp.repeat(tokens_BL, S, axis=0)
  com = jnp.repeat(commit_BL, S, axis=0)
  return state_at(tok, com, steps_BS.reshape(-1)[:, None], mask_id), com


def step_logprobs(apply, params, tokens_BL, commit_BL, attn_mask_BL, steps_BS, resp_start: int,
                  mask_id: int):
  """(log π(a_t | s_t) [B, S], tokens committed [B, S], per-token CE [B*S, R], targets mask).

  One forward pass over B * S rows; the output layer runs on the response window only.
  """
  B, L = tokens_BL.shape
  S = steps_BS.shape[1]
  states, com = step_states(tokens_BL, commit_BL, steps_BS, mask_id)
  mask = None if attn_mask_BL is None else jnp.repeat(attn_mask_BL, S, axis=0)
  positions = jnp.broadcast_to(jnp.arange(resp_start, L), (B * S, L - resp_start))
  logits = apply(params, states, mask, positions)
  logits = logits.at[..., mask_id].set(-jnp.inf)  # as in the sampler
  logp_all = jax.nn.log_softmax(logits, axis=-1)
  targets = jnp.repeat(tokens_BL, S, axis=0)[:, resp_start:]
  logp_tok = jnp.take_along_axis(logp_all, targets[..., None], axis=-1)[..., 0]
  acted = com[:, resp_start:] == steps_BS.reshape(-1)[:, None]
  logp = jnp.where(acted, logp_tok, 0.0).sum(axis=1).reshape(B, S)
  count = acted.sum(axis=1).reshape(B, S)
  return logp, count, -logp_tok, acted


def num_steps(commit_BL, resp_start: int):
  """Steps each trajectory took (max commit step + 1) [B]."""
  return commit_BL[:, resp_start:].max(axis=1) + 1
