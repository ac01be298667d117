"""Trajectory objectives of MRO (method.md §3-§5), plugged into the one train step.

Each is `loss_fn(apply, params, batch, key) -> (loss, metrics)` like the masked-diffusion
losses of `mro.training.losses`; the batches are stored trajectories (final tokens +
commit step per position, `mro.method.trajectory`) with per-step annotations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mro.method.trajectory import step_logprobs



def make_stepwise_loss(mask_id: int, resp_start: int, n_opt: int):
  """Reject-sampling fine-tuning on stored trajectories: for each trajectory pick n_opt
  consecutive random steps t and predict the tokens committed at t from the state before
  t (masked CE on exactly those positions, averaged per step, then over steps and rows).

  batch: tokens, commit_step, attn_mask [B, L]; num_steps [B] (the trajectory's T).
  """
  def loss_fn(apply, params, batch, key):
    T = batch["num_steps"]
    B = T.shape[0]
    start = jax.random.randint(key, (B,), 0, jnp.maximum(T - n_opt + 1, 1))
    steps = start[:, None] + jnp.arange(n_opt)
    logp, count, _, _ = step_logprobs(apply, params, batch["tokens"], batch["commit_step"],
                                      batch["attn_mask"], steps, resp_start, mask_id)
    valid = (count > 0) & (steps < T[:, None])
    per_step = -logp / jnp.maximum(count, 1)
    loss = jnp.where(valid, per_step, 0.0).sum() / jnp.maximum(valid.sum(), 1)
    return loss, {"tokens": batch["attn_mask"].sum(), "trained_steps": valid.sum()}

  return loss_fn


def make_sgro_loss(mask_id: int, resp_start: int, clip_eps: float | None = None,
                   kl_coef: float = 0.0):
  """REINFORCE over SGRO groups with importance weights (method.md §4-§5).

  The batch names, per trajectory, the steps of its selected groups and for each step:
    steps       int32[B, S]  step indices (S = n_opt * w)
    advantage   f32[B, S]    the step's group reward minus the baseline
    weight      f32[B, S]    1 / (n_opt * q_g): selection importance weight of its group
    old_logp    f32[B, S]    log π_old(a_t | s_t) at rollout time (for the ratio)
    ref_logp    f32[B, S]    log π_ref(a_t | s_t) of a frozen reference (for the KL)
  loss = -(1/B) Σ_s weight * min(ratio * A, clip(ratio) * A) + kl_coef * KL, with
  ratio = π_θ / π_old per step (= 1 on the first inner step, where the gradient is
  REINFORCE's A ∇log π) and the k3 estimate of KL(π_θ || π_ref).
  """
  def loss_fn(apply, params, batch, key):
    logp, count, _, _ = step_logprobs(apply, params, batch["tokens"], batch["commit_step"],
                                      batch["attn_mask"], batch["steps"], resp_start, mask_id)
    live = (count > 0).astype(jnp.float32)
    ratio = jnp.exp(logp - jax.lax.stop_gradient(batch["old_logp"]))
    adv = batch["advantage"]
    surrogate = ratio * adv
    if clip_eps is not None:
      surrogate = jnp.minimum(surrogate, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    B = logp.shape[0]
    loss = -(batch["weight"] * surrogate * live).sum() / B
    log_ref = batch["ref_logp"] - logp
    kl = ((jnp.exp(log_ref) - log_ref - 1.0) * live).sum() / B
    if kl_coef:
      loss = loss + kl_coef * kl
    return loss, {"tokens": batch["attn_mask"].sum(), "kl": kl,
                  "ratio": (ratio * live).sum() / jnp.maximum(live.sum(), 1)}

  return loss_fn
