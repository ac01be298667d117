"""The GRPO family's pieces (docs/rl.md): group-relative advantages, completion masks, the
random masks of each log-probability estimator, and the estimate itself.

Every estimator is one forward pass over S noised copies of each sequence
(`noise` bool[B, S, L]: True = replaced by MASK) and a per-pass coefficient of each
completion token (`pick` f32[B, S, R]); the per-token estimate is
φ_k = Σ_s pick[s, k] · log p_θ(o_k | copy s):

- d1 (diffu-GRPO, wd1): S = 1, the prompt's real tokens masked with probability p, the
  completion fully masked, pick = 1 (mean-field, one step).
- coupled (coupled-GRPO): S = 2, prompt visible, the completion masked by m in the first
  copy and by 1 - m in the second, pick = (m, 1 - m): every completion position is scored
  once, in the copy where it is masked. `released`: S = 3, a fully masked copy first and
  pick = (1/2, m / 2t, (1 - m) / 2(1 - t)), as the public DiffuCoder code combines them.

Masks are drawn from per-row keys (stable row ids) and the inner step, so a resumed run
draws the same masks as the uninterrupted one.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mro.messages import quoted
from mro.sampling.sampler import row_keys

STD_EPS = 1e-4  # (r - mean) / (std + STD_EPS), as TRL's GRPO


def group_advantages(rewards_PK, kind: str) -> np.ndarray:
  """Advantages of K completions per prompt, float64[P, K].

  centered: r - mean(r); normalized: (r - mean) / (std + 1e-4), std with Bessel's
  correction (torch's default, as in TRL); leave_one_out: r - mean of the other K - 1.
  """
  r = np.asarray(rewards_PK, np.float64)
  K = r.shape[1]
  mean = r.mean(axis=1, keepdims=True)
  if kind == "centered":
    return r - mean
  if kind == "normalized":
    return (r - mean) / (r.std(axis=1, ddof=1, keepdims=True) + STD_EPS)
  if kind == "leave_one_out":
    return r - (r.sum(axis=1, keepdims=True) - r) / (K - 1)
  raise ValueError(f"unknown advantage {quoted(kind)}; choose centered, normalized or "
                   "leave_one_out")


def wd1_weights(advantages_PK, psi: float, negative_weight: float) -> np.ndarray:
  """w+ - negative_weight · w-, float64[P, K]: w± = softmax over the group of ±psi · A."""
  a = psi * np.asarray(advantages_PK, np.float64)
  return _softmax(a) - negative_weight * _softmax(-a)


def _softmax(x_PK) -> np.ndarray:
  e = np.exp(x_PK - x_PK.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def completion_mask(response_BR, eos_id: int) -> np.ndarray:
  """bool[B, R]: the completion's tokens up to and including its first EOS (all of them
  when there is none); the EOS padding after it is not trained on (as d1 / TRL)."""
  resp = np.asarray(response_BR)
  is_eos = resp == eos_id
  first = np.where(is_eos.any(1), is_eos.argmax(1), resp.shape[1])
  return np.arange(resp.shape[1])[None, :] <= first[:, None]


def _uniform(keys_B, step: int, salt: int, shape) -> jax.Array:
  draw = lambda k: jax.random.uniform(jax.random.fold_in(jax.random.fold_in(k, step), salt),
                                      shape)
  return jax.vmap(draw)(keys_B)


def mask_keys(seed: int, rows) -> jax.Array:
  """One key per rollout row (`rows`: stable row ids), apart from the sampler's stream."""
  return row_keys(jax.random.key(seed + 104729), len(rows), np.asarray(rows))


def d1_noise(keys_B, step: int, prompt_attn_BP, response_len: int, p_mask: float):
  """(noise bool[B, 1, L], pick f32[B, 1, R]): real prompt tokens masked with probability
  p_mask, every completion position masked."""
  B, P = prompt_attn_BP.shape
  u = np.asarray(_uniform(keys_B, step, 1, (P,)))
  prompt = (u < p_mask) & np.asarray(prompt_attn_BP, bool)
  noise = np.concatenate([prompt, np.ones((B, response_len), bool)], 1)
  return noise[:, None], np.ones((B, 1, response_len), np.float32)


def coupled_noise(keys_B, step: int, prompt_len: int, response_len: int, t_min: float,
                  t_max: float, estimator: str = "pair"):
  """(noise bool[B, S, L], pick f32[B, S, R], t f32[B]): a mask m with ratio t ~ U(t_min,
  t_max) per row over the completion and its complement; the prompt is never masked."""
  B = keys_B.shape[0]
  t = t_min + (t_max - t_min) * np.asarray(_uniform(keys_B, step, 2, ()), np.float64)
  m = np.asarray(_uniform(keys_B, step, 3, (response_len,))) < t[:, None]
  prompt = np.zeros((B, prompt_len), bool)
  copies = [np.concatenate([prompt, m], 1), np.concatenate([prompt, ~m], 1)]
  pick = [m, ~m]
  if estimator == "released":
    full = np.concatenate([prompt, np.ones_like(m)], 1)
    copies = [full] + copies
    pick = [np.full(m.shape, 0.5), 0.5 * m / t[:, None], 0.5 * ~m / (1 - t[:, None])]
  elif estimator != "pair":
    raise ValueError(f"unknown coupled estimator {quoted(estimator)}; choose pair or released")
  return (np.stack(copies, 1), np.stack(pick, 1).astype(np.float32),
          t.astype(np.float32))


def token_logprobs(apply, params, tokens_BL, attn_BL, noise_BSL, pick_BSR, resp_start: int,
                   mask_id: int):
  """φ f32[B, R]: the per-token log-probability estimate of the completion (one forward
  pass over B * S rows; the output layer on the completion window only). MASK is never
  a prediction (its logit is -inf), as in the sampler."""
  B, S, L = noise_BSL.shape
  tok = jnp.repeat(tokens_BL, S, axis=0)
  noisy = jnp.where(noise_BSL.reshape(B * S, L), mask_id, tok)
  attn = None if attn_BL is None else jnp.repeat(attn_BL, S, axis=0)
  positions = jnp.broadcast_to(jnp.arange(resp_start, L), (B * S, L - resp_start))
  logits = apply(params, noisy, attn, positions).at[..., mask_id].set(-jnp.inf)
  logp_all = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  logp = jnp.take_along_axis(logp_all, tok[:, resp_start:, None], axis=-1)[..., 0]
  logp = logp.reshape(B, S, L - resp_start)
  return jnp.where(pick_BSR != 0, logp * pick_BSR, 0.0).sum(axis=1)


@functools.partial(jax.jit, static_argnames=("apply", "resp_start", "mask_id"))
def jit_token_logprobs(apply, params, tokens_BL, attn_BL, noise_BSL, pick_BSR, *,
                       resp_start: int, mask_id: int):
  return token_logprobs(apply, params, tokens_BL, attn_BL, noise_BSL, pick_BSR, resp_start,
                        mask_id)
