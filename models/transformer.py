"""The LLaDA mask predictor (and, with `causal=True`, the same network as an AR LM).

Pre-norm Transformer: RMSNorm in float32, half-split RoPE in float32, attention with
grouped KV heads and an optional key padding mask, gated SiLU MLP, untied output layer.
Parameter names follow the Hugging Face LLaDA checkpoint (`models/checkpoints.py`); every
weight carries `logical_axes` metadata that `models/sharding.py` maps onto a mesh.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models.config import ModelConfig
from models.sharding import constrain

ACT_BLD = ("act_batch", "act_length", "act_embed")  # the residual stream's logical axes


def _param(rngs: nnx.Rngs, shape, axes, std, dtype) -> nnx.Param:
  value = std * jax.random.normal(rngs.params(), shape, jnp.float32)
  return nnx.Param(value.astype(dtype), logical_axes=axes)


class Linear(nnx.Module):
  """Bias-free projection with a kernel stored as [in, out]."""

  def __init__(self, d_in: int, d_out: int, axes: tuple[str, str], cfg: ModelConfig,
               rngs: nnx.Rngs, std: float | None = None):
    std = cfg.init_std if std is None else std
    self.kernel = _param(rngs, (d_in, d_out), axes, std, cfg.jnp_param_dtype)
    self.dtype = cfg.jnp_compute_dtype

  def __call__(self, x):
    return jnp.einsum("...i,io->...o", x.astype(self.dtype), self.kernel[...].astype(self.dtype))


class RMSNorm(nnx.Module):
  """weight * normalise(x); the normalisation runs in float32, the weight after the cast back."""

  def __init__(self, dim: int, cfg: ModelConfig):
    self.weight = nnx.Param(jnp.ones((dim,), cfg.jnp_param_dtype), logical_axes=("norm",))
    self.eps = cfg.norm_eps

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return y.astype(x.dtype) * self.weight[...].astype(x.dtype)


def rope_angles(length: int, head_dim: int, theta: float):
  """cos, sin of shape [L, head_dim] for positions 0..L-1, half-split layout, float32."""
  inv_freq = theta ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  angle = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None, :]
  angle = jnp.concatenate([angle, angle], axis=-1)
  return jnp.cos(angle), jnp.sin(angle)


def apply_rope(x_BLHD, cos_LD, sin_LD):
  half = x_BLHD.shape[-1] // 2
  x32 = x_BLHD.astype(jnp.float32)
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  out = x32 * cos_LD[None, :, None, :] + rotated * sin_LD[None, :, None, :]
  return out.astype(x_BLHD.dtype)


class Attention(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    d, hd = cfg.d_model, cfg.resolved_head_dim
    self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, hd
    self.causal, self.theta = cfg.causal, cfg.rope_theta
    self.q_proj = Linear(d, cfg.n_heads * hd, ("embed", "heads"), cfg, rngs)
    self.k_proj = Linear(d, cfg.n_kv_heads * hd, ("embed", "kv_heads"), cfg, rngs)
    self.v_proj = Linear(d, cfg.n_kv_heads * hd, ("embed", "kv_heads"), cfg, rngs)
    self.attn_out = Linear(cfg.n_heads * hd, d, ("heads", "embed"), cfg, rngs)

  def __call__(self, x_BLD, key_mask_BL):
    B, L, _ = x_BLD.shape
    hd, kv, groups = self.head_dim, self.n_kv_heads, self.n_heads // self.n_kv_heads
    q = self.q_proj(x_BLD).reshape(B, L, self.n_heads, hd)
    k = self.k_proj(x_BLD).reshape(B, L, kv, hd)
    v = self.v_proj(x_BLD).reshape(B, L, kv, hd)
    cos, sin = rope_angles(L, hd, self.theta)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    q = q.reshape(B, L, kv, groups, hd)
    scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k).astype(jnp.float32) / jnp.sqrt(hd)
    bias = jnp.zeros((B, 1, 1, L, L), jnp.float32)
    neg = jnp.finfo(jnp.float32).min
    if key_mask_BL is not None:
      bias = jnp.where(key_mask_BL[:, None, None, None, :], bias, neg)
    if self.causal:
      allowed = jnp.tril(jnp.ones((L, L), bool))
      bias = jnp.where(allowed[None, None, None], bias, neg)
    probs = jax.nn.softmax(scores + bias, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v).reshape(B, L, self.n_heads * hd)
    return self.attn_out(out)


class Block(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    d = cfg.d_model
    self.attn_norm = RMSNorm(d, cfg)
    self.attn = Attention(cfg, rngs)
    self.ff_norm = RMSNorm(d, cfg)
    self.ff_proj = Linear(d, cfg.mlp_hidden, ("embed", "mlp"), cfg, rngs)  # the gate
    self.up_proj = Linear(d, cfg.mlp_hidden, ("embed", "mlp"), cfg, rngs)
    self.ff_out = Linear(cfg.mlp_hidden, d, ("mlp", "embed"), cfg, rngs)

  def __call__(self, x_BLD, key_mask_BL):
    h = x_BLD + self.attn(self.attn_norm(x_BLD), key_mask_BL)
    n = self.ff_norm(h)
    return h + self.ff_out(jax.nn.silu(self.ff_proj(n)) * self.up_proj(n))


class Transformer(nnx.Module):
  """tokens [B, L] (+ optional padding mask) -> logits [B, L, V] (or at chosen positions)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.wte = nnx.Param(
        jax.random.normal(rngs.params(), (cfg.vocab_size, cfg.d_model)).astype(
            cfg.jnp_param_dtype), logical_axes=("vocab", "embed"))
    self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layers)])
    self.ln_f = RMSNorm(cfg.d_model, cfg)
    self.ff_out = Linear(cfg.d_model, cfg.vocab_size, ("embed", "vocab"), cfg, rngs,
                         std=cfg.d_model ** -0.5)

  def hidden(self, tokens_BL, attention_mask_BL=None):
    """Final-norm hidden states [B, L, D]. `attention_mask_BL`: 1/True = real token."""
    if tokens_BL.shape[1] > self.cfg.max_seq_len:
      raise ValueError(f"sequence length {tokens_BL.shape[1]} exceeds model.max_seq_len="
                       f"{self.cfg.max_seq_len}")
    key_mask = None if attention_mask_BL is None else attention_mask_BL.astype(bool)
    x = self.wte[...][tokens_BL].astype(self.cfg.jnp_compute_dtype)
    for block in self.blocks:
      if self.cfg.remat:  # pure jax.checkpoint: also valid inside lax loops (the sampler)
        graphdef, state = nnx.split(block)
        run = lambda s, y, m, g=graphdef: nnx.merge(g, s)(y, m)
        x = jax.checkpoint(run)(state, x, key_mask)
      else:
        x = block(x, key_mask)
    return self.ln_f(x)

  def logits_from_hidden(self, h_BKD):
    # Under `activation_mesh` (training) the output layer keeps rows split over data x
    # fsdp: left alone, XLA may contract over the fsdp-split model dimension and hold
    # every row's [K, V] logits on every device (memory growing with the global batch).
    # The layers' activations are left to XLA's propagation.
    logits = self.ff_out(constrain(h_BKD, ACT_BLD)).astype(jnp.float32)
    return constrain(logits, ("act_batch", "act_length", "act_vocab"))

  def predictor_hidden(self, tokens_BL, attention_mask_BL=None):
    """[B, L, D] states whose output-layer logits at i predict token i (shift applied)."""
    h = self.hidden(tokens_BL, attention_mask_BL)
    if self.cfg.shift_logits:  # Dream-style: hidden i predicts token i + 1.
      h = jnp.concatenate([h[:, :1], h[:, :-1]], axis=1)
    return h

  def __call__(self, tokens_BL, attention_mask_BL=None, positions_BK=None):
    """Logits where position i predicts token i (float32).

    `positions_BK` restricts the output layer to K positions per row (the sampler
    needs only the current block; the loss only the masked positions).
    """
    h = self.predictor_hidden(tokens_BL, attention_mask_BL)
    if positions_BK is not None:
      h = jnp.take_along_axis(h, positions_BK[..., None], axis=1)
    return self.logits_from_hidden(h)


def init_model(cfg: ModelConfig, seed: int = 0) -> Transformer:
  return Transformer(cfg, nnx.Rngs(params=seed))


def abstract_model(cfg: ModelConfig):
  """(graphdef, abstract state) without allocating parameters."""
  model = nnx.eval_shape(lambda: init_model(cfg))
  return nnx.split(model)


@dataclasses.dataclass(frozen=True)
class ModelApply:
  """`apply(params, tokens, attention_mask, positions) -> logits` for an nnx graphdef.

  Hashable, so compiled programs can take it as a static argument; `params` is the
  nnx state from `nnx.split(model)`.
  """

  graphdef: Any

  def __call__(self, params, tokens_BL, attention_mask_BL=None, positions_BK=None):
    return nnx.merge(self.graphdef, params)(tokens_BL, attention_mask_BL, positions_BK)

  def hidden(self, params, tokens_BL, attention_mask_BL=None):
    """[B, L, D] states before the output layer (for losses that pick positions later)."""
    return nnx.merge(self.graphdef, params).predictor_hidden(tokens_BL, attention_mask_BL)

  def head(self, params, h_BKD):
    """The output layer: [B, K, D] states -> [B, K, V] float32 logits."""
    return nnx.merge(self.graphdef, params).logits_from_hidden(h_BKD)
