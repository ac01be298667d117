"""Trajectory objectives of MRO (method.md §3-§5) and the GRPO family (docs/rl.md),
plugged into the one train step.

Each is `loss_fn(apply, params, batch, key) -> (loss, metrics)` like the masked-diffusion
losses of `mro.training.losses`; the batches are stored trajectories (final tokens +
commit step per position, `mro.method.finetuning.trajectory`) with per-step annotations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mro.messages import quoted
from mro.method.finetuning import grpo
from mro.method.finetuning.settings import STEP_TARGETS
from mro.method.finetuning.trajectory import step_logprobs


def make_stepwise_loss(mask_id: int, resp_start: int, n_opt: int, targets: str = "committed"):
  """Reject-sampling fine-tuning on stored trajectories: for each trajectory pick n_opt
  consecutive random steps t and predict from the state before t the tokens committed at
  t (`targets="committed"`, the paper) or every position still masked there, with its
  final token (`"masked"`); masked CE on exactly those positions, averaged per step, then
  over steps and rows.

  batch: tokens, commit_step, attn_mask [B, L]; num_steps [B] (the trajectory's T).
  """
  if targets not in STEP_TARGETS:
    raise ValueError(f"targets must be one of {STEP_TARGETS}, got {quoted(targets)}")

  def loss_fn(apply, params, batch, key):
    T = batch["num_steps"]
    B = T.shape[0]
    start = jax.random.randint(key, (B,), 0, jnp.maximum(T - n_opt + 1, 1))
    steps = start[:, None] + jnp.arange(n_opt)
    logp, count, ce, _ = step_logprobs(apply, params, batch["tokens"], batch["commit_step"],
                                       batch["attn_mask"], steps, resp_start, mask_id)
    if targets == "masked":
      rest = (jnp.repeat(batch["commit_step"], n_opt, axis=0)[:, resp_start:]
              >= steps.reshape(-1)[:, None])
      logp = -jnp.where(rest, ce, 0.0).sum(axis=1).reshape(B, n_opt)
      count = rest.sum(axis=1).reshape(B, n_opt)
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


# --- the GRPO family (docs/rl.md) -----------------------------------------------------
#
# Their batches (mro/method/finetuning/grpo_batches.py) hold, per completion row:
#   tokens, attn_mask  [B, L]       prompt + completion, as sampled
#   loss_mask          f32[B, R]    the completion's tokens up to its first EOS
#   noise, pick        [B, S, L], [B, S, R]: the estimator's masked copies
#                      (mro/method/finetuning/grpo.py)
#   advantage          f32[B]       group-relative (diffu-GRPO, coupled-GRPO)
#   old_logp, ref_logp f32[B, R]    π_old / π_ref estimates under the same masks
#   weight             f32[B]       wd1: G (w+ - λ w-) of the row


def _estimate(apply, params, batch, resp_start: int, mask_id: int):
  return grpo.token_logprobs(apply, params, batch["tokens"], batch["attn_mask"],
                             batch["noise"], batch["pick"], resp_start, mask_id)


def make_clipped_grpo_loss(mask_id: int, resp_start: int, clip_eps: float | None,
                           kl_coef: float, loss_norm: str = "sequence"):
  """The clipped GRPO objective on per-token estimates φ (diffu-GRPO, coupled-GRPO):

    per token  ℓ_ik = min(ρ_ik A_i, clip(ρ_ik, 1 ± ε) A_i) - β KL_ik,  ρ = exp(φ_θ - φ_old)
    KL_ik = exp(φ_ref - φ_θ) - (φ_ref - φ_θ) - 1   (k3, as d1)
    loss = -(1/B) Σ_i (1/|o_i|) Σ_k c_ik ℓ_ik  (sequence)  or  -Σ c ℓ / Σ c  (tokens)

  ρ = 1 on the first inner step (φ_old was measured with the same masks and weights).
  """
  def loss_fn(apply, params, batch, key):
    phi = _estimate(apply, params, batch, resp_start, mask_id)
    c = batch["loss_mask"].astype(jnp.float32)
    adv = batch["advantage"][:, None]
    ratio = jnp.exp(phi - jax.lax.stop_gradient(batch["old_logp"]))
    surrogate = ratio * adv
    clipped = jnp.zeros_like(ratio)
    if clip_eps is not None:
      bounded = jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv
      clipped = (bounded < surrogate).astype(jnp.float32)
      surrogate = jnp.minimum(surrogate, bounded)
    log_ref = batch["ref_logp"] - phi
    kl = jnp.exp(log_ref) - log_ref - 1.0
    per_token = surrogate - kl_coef * kl if kl_coef else surrogate
    tokens = jnp.maximum(c.sum(), 1.0)
    if loss_norm == "tokens":
      loss = -(per_token * c).sum() / tokens
    else:
      loss = -((per_token * c).sum(1) / jnp.maximum(c.sum(1), 1.0)).mean()
    mean = lambda x: (x * c).sum() / tokens
    return loss, {"tokens": batch["attn_mask"].sum(), "kl": mean(kl), "ratio": mean(ratio),
                  "clip_frac": mean(clipped)}

  return loss_fn


def make_diffu_grpo_loss(mask_id: int, resp_start: int, cfg):
  """diffu-GRPO (d1): the clipped objective on the one-step prompt-masked estimate."""
  return make_clipped_grpo_loss(mask_id, resp_start, cfg.clip_eps, cfg.kl_coef,
                                cfg.loss_norm)


def make_coupled_grpo_loss(mask_id: int, resp_start: int, cfg):
  """coupled-GRPO (DiffuCoder): the clipped objective on the complementary-mask estimate
  (the batch's noise/pick carry the pair; the objective is diffu-GRPO's)."""
  return make_clipped_grpo_loss(mask_id, resp_start, cfg.clip_eps, cfg.kl_coef,
                                cfg.loss_norm)


def make_wd1_loss(mask_id: int, resp_start: int):
  """wd1: loss = -(1/B) Σ_i weight_i Σ_k c_ik φ_ik with weight_i = G (w+_i - λ w-_i),
  i.e. -(1/P) Σ_prompts Σ_i (w+_i - λ w-_i) log π_θ(o_i | q). No ratio, no π_old."""
  def loss_fn(apply, params, batch, key):
    phi = _estimate(apply, params, batch, resp_start, mask_id)
    seq = (phi * batch["loss_mask"].astype(jnp.float32)).sum(1)
    loss = -(batch["weight"] * seq).mean()
    return loss, {"tokens": batch["attn_mask"].sum(), "seq_logp": seq.mean()}

  return loss_fn
