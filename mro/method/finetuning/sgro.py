"""SGRO bookkeeping: group rewards, baselines, and importance-sampled group selection.

A trajectory's T steps form G = T / w groups. Group g's reward is the sum of the intra
rewards measured at its end (R_tv, R_ppl), plus R_q if it is the last group, plus the
optional potential-based shaping λ Φ(s_end) - Φ(s_start) with Φ = R_q of the state's
committed tokens (method.md §3).

Only n_opt of the G groups are optimised per trajectory (method.md §4, use 1). They are
drawn with replacement with probabilities q_g and weighted by 1 / (n_opt q_g), which is
unbiased for the full sum over groups; with n_opt >= G every group is used once with
weight 1 (the exact full REINFORCE gradient). q: `uniform` (default), `advantage`
(∝ |R_g - baseline|, floored) or `tokens` (∝ tokens committed in the group).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mro.messages import quoted
from mro.method.finetuning.settings import BASELINES, Q_RULES



def baseline(rewards_PKG, kind: str) -> np.ndarray:
  """Baselines for rewards of K rollouts per prompt, per group: [P, K, G].

  `none` (the paper) is 0; `group_mean` is the leave-one-out mean of the other rollouts
  of the same prompt (RLOO / GRPO style), which keeps the estimator unbiased.
  """
  if kind == "none":
    return np.zeros_like(rewards_PKG)
  if kind == "group_mean":
    K = rewards_PKG.shape[1]
    if K < 2:
      raise ValueError("baseline 'group_mean' needs at least 2 rollouts per prompt")
    total = rewards_PKG.sum(axis=1, keepdims=True)
    return (total - rewards_PKG) / (K - 1)
  raise ValueError(f"unknown baseline {quoted(kind)}; choose one of {BASELINES}")


def tokens_per_group(commit_step_BR, num_groups: int, w: int) -> np.ndarray:
  """int[B, G]: the response tokens each group of w steps committed (`commit_step_BR`: the
  step that committed each response position): what q_rule=tokens weighs groups by."""
  commit = np.asarray(commit_step_BR)
  return np.stack([((commit >= g * w) & (commit < (g + 1) * w)).sum(1)
                   for g in range(num_groups)], 1)


def selection_probs(rule: str, advantage_BG, tokens_BG, floor: float = 1e-3):
  """q_g per trajectory [B, G] (rows sum to 1): `uniform`; `advantage`, ∝ |A_g| + floor;
  `tokens`, ∝ the group's committed tokens + floor. The floor keeps every q_g > 0, so the
  importance weight 1 / (n_opt q_g) of a drawn group stays finite."""
  if rule == "uniform":
    q = jnp.ones_like(advantage_BG)
  elif rule == "advantage":
    q = jnp.abs(advantage_BG) + floor
  elif rule == "tokens":
    q = tokens_BG.astype(jnp.float32) + floor
  else:
    raise ValueError(f"unknown group selection rule {quoted(rule)}; choose one of {Q_RULES}")
  return q / q.sum(axis=1, keepdims=True)


def select_groups(key, q_BG, n_opt: int):
  """(groups [B, n], weights [B, n]): n = min(n_opt, G) groups per trajectory."""
  B, G = q_BG.shape
  if n_opt >= G:
    return jnp.broadcast_to(jnp.arange(G), (B, G)), jnp.ones((B, G), jnp.float32)
  keys = jax.random.split(key, B)
  draw = lambda k, q: jax.random.choice(k, G, (n_opt,), replace=True, p=q)
  groups = jax.vmap(draw)(keys, q_BG)
  weights = 1.0 / (n_opt * jnp.take_along_axis(q_BG, groups, axis=1))
  return groups, weights


def group_steps(groups_Bn, w: int):
  """Step indices [B, n * w] of the selected groups, and each step's slot [B, n * w]."""
  B, n = groups_Bn.shape
  steps = groups_Bn[:, :, None] * w + jnp.arange(w)
  slot = jnp.broadcast_to(jnp.arange(n)[:, None], (n, w))
  return steps.reshape(B, n * w), jnp.broadcast_to(slot.reshape(-1), (B, n * w))


def per_step(values_Bn, w: int):
  """Repeats a per-selected-group value for each of its w steps: [B, n] -> [B, n * w]."""
  return jnp.repeat(values_Bn, w, axis=1)
