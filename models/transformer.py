"""The mask predictor of the LLaDA, Dream and LLaDA-MoE families (and, with `causal=True`,
the same network as an AR LM).

Pre-norm Transformer: RMSNorm in float32, half-split RoPE in float32, attention with
grouped KV heads and an optional key padding mask, gated SiLU MLP, untied output layer.
Family options (ModelConfig): q/k/v biases and padding-aware RoPE positions (Dream),
per-head q/k RMSNorm and routed experts (LLaDA-MoE, models/moe.py). Parameter names
follow the LLaDA checkpoint (the other families' map onto them: models/hf_names.py);
every weight carries `logical_axes` metadata that `models/sharding.py` maps onto a mesh.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.config import ModelConfig
from models.moe import MoE
from models.sharding import constrain

ACT_BLD = ("act_batch", "act_length", "act_embed")  # the residual stream's logical axes


def _param(rngs: nnx.Rngs, shape, axes, std, dtype) -> nnx.Param:
  value = std * jax.random.normal(rngs.params(), shape, jnp.float32)
  return nnx.Param(value.astype(dtype), logical_axes=axes)


class Linear(nnx.Module):
  """Projection with a kernel stored as [in, out] (and a bias when `bias`)."""

  def __init__(self, d_in: int, d_out: int, axes: tuple[str, str], cfg: ModelConfig,
               rngs: nnx.Rngs, std: float | None = None, bias: bool = False):
    std = cfg.init_std if std is None else std
    self.kernel = _param(rngs, (d_in, d_out), axes, std, cfg.jnp_param_dtype)
    self.bias = (nnx.Param(jnp.zeros((d_out,), cfg.jnp_param_dtype), logical_axes=axes[1:])
                 if bias else None)
    self.dtype = cfg.jnp_compute_dtype

  def __call__(self, x):
    y = jnp.einsum("...i,io->...o", x.astype(self.dtype), self.kernel[...].astype(self.dtype))
    return y if self.bias is None else y + self.bias[...].astype(self.dtype)


class RMSNorm(nnx.Module):
  """weight * normalise(x); the normalisation runs in float32, the weight after the cast back."""

  def __init__(self, dim: int, cfg: ModelConfig):
    self.weight = nnx.Param(jnp.ones((dim,), cfg.jnp_param_dtype), logical_axes=("norm",))
    self.eps = cfg.norm_eps

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return y.astype(x.dtype) * self.weight[...].astype(x.dtype)


def rope_angles(positions_BL, head_dim: int, theta: float):
  """cos, sin of shape [B, L, head_dim] (B may be 1) for integer positions, half-split
  layout, float32."""
  inv_freq = theta ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  angle = jnp.asarray(positions_BL, jnp.float32)[..., None] * inv_freq
  angle = jnp.concatenate([angle, angle], axis=-1)
  return jnp.cos(angle), jnp.sin(angle)


def apply_rope(x_BLHD, cos_BLD, sin_BLD):
  half = x_BLHD.shape[-1] // 2
  x32 = x_BLHD.astype(jnp.float32)
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  out = x32 * cos_BLD[:, :, None, :] + rotated * sin_BLD[:, :, None, :]
  return out.astype(x_BLHD.dtype)


class Attention(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    d, hd = cfg.d_model, cfg.resolved_head_dim
    self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, hd
    self.causal = cfg.causal
    bias = cfg.qkv_bias
    self.q_proj = Linear(d, cfg.n_heads * hd, ("embed", "heads"), cfg, rngs, bias=bias)
    self.k_proj = Linear(d, cfg.n_kv_heads * hd, ("embed", "kv_heads"), cfg, rngs, bias=bias)
    self.v_proj = Linear(d, cfg.n_kv_heads * hd, ("embed", "kv_heads"), cfg, rngs, bias=bias)
    self.attn_out = Linear(cfg.n_heads * hd, d, ("heads", "embed"), cfg, rngs)
    # per-head RMSNorm of q and k (one weight of head_dim shared by the heads)
    self.q_norm = RMSNorm(hd, cfg) if cfg.qk_norm else None
    self.k_norm = RMSNorm(hd, cfg) if cfg.qk_norm else None

  def project(self, x_BWD, cos_BWD, sin_BWD):
    """q [B, W, heads, hd], k and v [B, W, kv_heads, hd] of W positions (RoPE applied)."""
    B, W, _ = x_BWD.shape
    hd, kv = self.head_dim, self.n_kv_heads
    q = self.q_proj(x_BWD).reshape(B, W, self.n_heads, hd)
    k = self.k_proj(x_BWD).reshape(B, W, kv, hd)
    v = self.v_proj(x_BWD).reshape(B, W, kv, hd)
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    return apply_rope(q, cos_BWD, sin_BWD), apply_rope(k, cos_BWD, sin_BWD), v

  def attend(self, q_BWHD, parts):
    """Attention of W queries over one or more key sets `parts` = ((k, v, bias), ...),
    with k, v [B, S, kv_heads, hd] and an additive float32 bias broadcastable to
    [B, 1, 1, W, S]; one softmax over all keys of all parts."""
    B, W = q_BWHD.shape[:2]
    hd, kv, groups = self.head_dim, self.n_kv_heads, self.n_heads // self.n_kv_heads
    q = q_BWHD.reshape(B, W, kv, groups, hd)
    scores = [jnp.einsum("bqkgd,bskd->bkgqs", q, k).astype(jnp.float32) / jnp.sqrt(hd) + bias
              for k, _, bias in parts]
    sizes = [k.shape[1] for k, _, _ in parts]
    probs = jax.nn.softmax(scores[0] if len(parts) == 1 else jnp.concatenate(scores, -1),
                           axis=-1)
    out = None
    for (_, v, _), lo, size in zip(parts, np.cumsum([0] + sizes), sizes):
      p = probs if len(parts) == 1 else probs[..., lo:lo + size]
      term = jnp.einsum("bkgqs,bskd->bqkgd", p.astype(v.dtype), v)
      out = term if out is None else out + term
    return self.attn_out(out.reshape(B, W, self.n_heads * hd))

  def full(self, x_BLD, key_mask_BL, rope):
    """Self-attention over the whole sequence: (output, k, v), k/v as `project` gives them.
    `rope` = (cos, sin) of the positions, [B or 1, L, head_dim]."""
    B, L, _ = x_BLD.shape
    q, k, v = self.project(x_BLD, *rope)
    bias = jnp.zeros((B, 1, 1, L, L), jnp.float32)
    neg = jnp.finfo(jnp.float32).min
    if key_mask_BL is not None:
      bias = jnp.where(key_mask_BL[:, None, None, None, :], bias, neg)
    if self.causal:
      allowed = jnp.tril(jnp.ones((L, L), bool))
      bias = jnp.where(allowed[None, None, None], bias, neg)
    return self.attend(q, ((k, v, bias),)), k, v

  def __call__(self, x_BLD, key_mask_BL, rope):
    return self.full(x_BLD, key_mask_BL, rope)[0]


class Block(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, layer: int = 0):
    d = cfg.d_model
    self.attn_norm = RMSNorm(d, cfg)
    self.attn = Attention(cfg, rngs)
    self.ff_norm = RMSNorm(d, cfg)
    if cfg.is_moe_layer(layer):  # routed experts (models/moe.py)
      self.moe = MoE(cfg, rngs)
      self.ff_proj = self.up_proj = self.ff_out = None
    else:  # the dense gated SiLU MLP
      self.ff_proj = Linear(d, cfg.mlp_hidden, ("embed", "mlp"), cfg, rngs)  # the gate
      self.up_proj = Linear(d, cfg.mlp_hidden, ("embed", "mlp"), cfg, rngs)
      self.ff_out = Linear(cfg.mlp_hidden, d, ("mlp", "embed"), cfg, rngs)
      self.moe = None

  def mlp(self, h_BLD):
    n = self.ff_norm(h_BLD)
    if self.moe is not None:
      return h_BLD + self.moe(n)
    return h_BLD + self.ff_out(jax.nn.silu(self.ff_proj(n)) * self.up_proj(n))

  def with_kv(self, x_BLD, key_mask_BL, rope):
    """The block over the whole sequence, and the K/V its attention computed."""
    out, k, v = self.attn.full(self.attn_norm(x_BLD), key_mask_BL, rope)
    return self.mlp(x_BLD + out), k, v

  def windowed(self, x_BWD, rope_W, cached, fresh_bias):
    """The block on W window positions: queries attend to the cached K/V (`cached` =
    (k, v, bias) over the whole sequence) and to the window's own fresh K/V."""
    q, k, v = self.attn.project(self.attn_norm(x_BWD), *rope_W)
    return self.mlp(x_BWD + self.attn.attend(q, (cached, (k, v, fresh_bias))))

  def __call__(self, x_BLD, key_mask_BL, rope):
    return self.with_kv(x_BLD, key_mask_BL, rope)[0]


class Transformer(nnx.Module):
  """tokens [B, L] (+ optional padding mask) -> logits [B, L, V] (or at chosen positions)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.wte = nnx.Param(
        jax.random.normal(rngs.params(), (cfg.vocab_size, cfg.d_model)).astype(
            cfg.jnp_param_dtype), logical_axes=("vocab", "embed"))
    self.blocks = nnx.List([Block(cfg, rngs, i) for i in range(cfg.n_layers)])
    self.ln_f = RMSNorm(cfg.d_model, cfg)
    self.ff_out = Linear(cfg.d_model, cfg.vocab_size, ("embed", "vocab"), cfg, rngs,
                         std=cfg.d_model ** -0.5)

  def positions(self, key_mask_BL, length: int):
    """int32 [B or 1, L] RoPE positions: column indices, or with `positions_skip_padding`
    and a mask the count of real tokens before each position (0 on padding)."""
    if key_mask_BL is None or not self.cfg.positions_skip_padding:
      return jnp.arange(length, dtype=jnp.int32)[None]
    return jnp.maximum(jnp.cumsum(key_mask_BL.astype(jnp.int32), axis=1) - 1, 0)

  def rope(self, key_mask_BL, length: int):
    return rope_angles(self.positions(key_mask_BL, length), self.cfg.resolved_head_dim,
                       self.cfg.rope_theta)

  def hidden(self, tokens_BL, attention_mask_BL=None):
    """Final-norm hidden states [B, L, D]. `attention_mask_BL`: 1/True = real token."""
    if tokens_BL.shape[1] > self.cfg.max_seq_len:
      raise ValueError(f"sequence length {tokens_BL.shape[1]} exceeds model.max_seq_len="
                       f"{self.cfg.max_seq_len}")
    key_mask = None if attention_mask_BL is None else attention_mask_BL.astype(bool)
    rope = self.rope(key_mask, tokens_BL.shape[1])
    x = self.wte[...][tokens_BL].astype(self.cfg.jnp_compute_dtype)
    for block in self.blocks:
      if self.cfg.remat:  # pure jax.checkpoint: also valid inside lax loops (the sampler)
        graphdef, state = nnx.split(block)
        run = lambda s, y, m, r, g=graphdef: nnx.merge(g, s)(y, m, r)
        x = jax.checkpoint(run)(state, x, key_mask, rope)
      else:
        x = block(x, key_mask, rope)
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

  # --- the cache-aware forward (the sampler's block KV caches) ----------------------------

  def fill(self, tokens_BL, attention_mask_BL, positions_BK):
    """`__call__`'s logits at `positions_BK`, and every layer's K/V over the whole
    sequence: (logits [B, K, V], (k, v)) with k, v [n_layers, B, L, kv_heads, head_dim]."""
    self._check_cacheable(tokens_BL.shape[1])
    key_mask = None if attention_mask_BL is None else attention_mask_BL.astype(bool)
    rope = self.rope(key_mask, tokens_BL.shape[1])
    x = self.wte[...][tokens_BL].astype(self.cfg.jnp_compute_dtype)
    ks, vs = [], []
    for block in self.blocks:
      x, k, v = block.with_kv(x, key_mask, rope)
      ks.append(k)
      vs.append(v)
    h = self.ln_f(x)
    if self.cfg.shift_logits:
      h = jnp.concatenate([h[:, :1], h[:, :-1]], axis=1)
    h = jnp.take_along_axis(h, positions_BK[..., None], axis=1)
    return self.logits_from_hidden(h), (jnp.stack(ks), jnp.stack(vs))

  def window(self, tokens_BL, attention_mask_BL, cache, start, width: int, write_from,
             positions_BK):
    """Logits at `positions_BK` from a forward pass over the window [start, start + width)
    only. Each layer's queries attend to the window's fresh K/V at the positions
    >= `write_from` and to the cached K/V (`cache` = (k, v) as `fill` returns them) at
    every other position; window positions before `write_from` are computed but their
    K/V are not used (the cache's are). `start` and `write_from` are scalars (traced is
    fine), `width` is static. Dream-style models (shift_logits) read the hidden state one
    position earlier, so their window starts one position before `start`.
    """
    L = tokens_BL.shape[1]
    self._check_cacheable(L)
    lead = int(self.cfg.shift_logits)
    start, width = start - lead, width + lead
    cache_k, cache_v = cache
    B = tokens_BL.shape[0]
    pos_W = start + jnp.arange(width)
    pos_L = jnp.arange(L)
    key_mask = (jnp.ones((B, L), bool) if attention_mask_BL is None
                else attention_mask_BL.astype(bool))
    fresh = pos_W >= write_from
    stale = (pos_L >= write_from) & (pos_L < start + width)
    neg = jnp.finfo(jnp.float32).min
    bias = lambda ok: jnp.where(ok[:, None, None, None, :], 0.0, neg).astype(jnp.float32)
    cached_bias = bias(key_mask & ~stale[None])
    fresh_bias = bias(jax.lax.dynamic_slice_in_dim(key_mask, start, width, 1) & fresh[None])
    positions = jax.lax.dynamic_slice_in_dim(self.positions(key_mask, L), start, width, 1)
    rope = rope_angles(positions, self.cfg.resolved_head_dim, self.cfg.rope_theta)
    tokens_BW = jax.lax.dynamic_slice_in_dim(tokens_BL, start, width, 1)
    x = self.wte[...][tokens_BW].astype(self.cfg.jnp_compute_dtype)
    for layer, block in enumerate(self.blocks):
      x = block.windowed(x, rope, (cache_k[layer], cache_v[layer], cached_bias), fresh_bias)
    h = self.ln_f(x)
    offsets = positions_BK - start - lead
    h = jnp.take_along_axis(h, offsets[..., None], axis=1)
    return self.logits_from_hidden(h)

  def _check_cacheable(self, length: int):
    if self.cfg.causal:
      raise ValueError("KV caches are for the bidirectional mask predictor, not causal models")
    if length > self.cfg.max_seq_len:
      raise ValueError(f"sequence length {length} exceeds model.max_seq_len="
                       f"{self.cfg.max_seq_len}")


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

  def fill(self, params, tokens_BL, attention_mask_BL, positions_BK):
    """(logits at positions_BK, (k, v) of every layer and position): `Transformer.fill`."""
    return nnx.merge(self.graphdef, params).fill(tokens_BL, attention_mask_BL, positions_BK)

  def window(self, params, tokens_BL, attention_mask_BL, cache, start, width: int,
             write_from, positions_BK):
    """Logits of a window forward over cached K/V: `Transformer.window`."""
    return nnx.merge(self.graphdef, params).window(tokens_BL, attention_mask_BL, cache, start,
                                                   width, write_from, positions_BK)

  def cache_shape(self, params, rows: int, length: int):
    """(shape, dtype) of one of the K/V arrays `fill` returns for `rows` sequences."""
    cfg = nnx.merge(self.graphdef, params).cfg
    return ((cfg.n_layers, rows, length, cfg.n_kv_heads, cfg.resolved_head_dim),
            cfg.jnp_compute_dtype)
