"""Block KV caches for the sampler (Fast-dLLM's prefix and dual cache), as pure functions.

The cache is a field of the sampler's `DecodeState`: every layer's K/V over the whole
sequence, [n_layers, C, B, L, kv_heads, head_dim] (C = 2 with classifier-free guidance:
the conditional rows, then the unconditional ones), plus the block it was filled at and
its age in steps. Shapes are static, so it rides in the one `lax` loop of the sampler.

At a step, `cached_logits` either refills the cache (one full forward pass: the block's
logits come from it, exactly as without a cache) or reads it:

- dual: the network runs on the block_length positions of the current block only; their
  queries attend to the block's fresh K/V and to the cached K/V of every other position
  (the prompt, finished blocks and the still-masked later blocks, as they were at the fill).
- prefix: the network runs on the current block and everything after it (fresh K/V for
  all of these), attending to the cached K/V of the prompt and the finished blocks. The
  window width is static: the remaining response length rounded up to block_length
  times a power of two (`prefix_windows`); window positions before the block are computed
  but their K/V come from the cache, so the result is the same as the exact-width window.

A refill happens when the block changes and, with `refresh_every = N`, every N steps inside
a block. The block and the age are scalars: with a cache every row works on the same block
at each step (`SamplerConfig.lockstep`), so refills are shared by the batch and a row's
result never depends on the other rows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mro.sampling.schedule import SamplerConfig


class KVCache(NamedTuple):
  k: jax.Array  # [n_layers, C, B, L, kv_heads, head_dim]
  v: jax.Array
  block: jax.Array  # int32[]: the block the cache was filled at (-1: never filled)
  age: jax.Array  # int32[]: steps since that fill


def check_cacheable(apply: Any) -> None:
  """ValueError unless `apply` has the cache-aware forward (`fill`, `window`)."""
  if not all(hasattr(apply, name) for name in ("fill", "window", "cache_shape")):
    raise ValueError(f"cache needs a network with a cache-aware forward (fill, window, "
                     f"cache_shape: models.transformer.ModelApply); got {type(apply).__name__}")


def new_cache(apply, params, rows: int, length: int, cfg: SamplerConfig) -> KVCache | None:
  """An empty (never filled) cache for `rows` sequences of `length`, or None without one."""
  if cfg.cache == "none":
    return None
  check_cacheable(apply)
  views = 2 if cfg.cfg_scale else 1
  (layers, _, _, kv_heads, head_dim), dtype = apply.cache_shape(params, rows, length)
  zeros = jnp.zeros((layers, views, rows, length, kv_heads, head_dim), dtype)
  return KVCache(zeros, zeros, jnp.full((), -1, jnp.int32), jnp.zeros((), jnp.int32))


def cache_rows(cache: KVCache | None, fn) -> KVCache | None:
  """The cache with `fn` ([B, ...] -> [B', ...]) applied along its row axis."""
  if cache is None:
    return None
  on_rows = lambda x: jnp.moveaxis(fn(jnp.moveaxis(x, 2, 0)), 0, 2)
  return cache._replace(k=on_rows(cache.k), v=on_rows(cache.v))


def prefix_windows(cfg: SamplerConfig) -> tuple[tuple[int, ...], np.ndarray]:
  """(window widths, int32[num_blocks] index of the width each block uses) of the prefix
  cache: the remaining response length gen_length - b * block_length rounded up to
  block_length * 2^i (at most gen_length): log2(num_blocks) + 1 compiled widths."""
  widths = sorted({min(cfg.block_length * 2**i, cfg.gen_length)
                   for i in range(cfg.num_blocks.bit_length() + 1)})
  remaining = cfg.gen_length - np.arange(cfg.num_blocks) * cfg.block_length
  return tuple(widths), np.searchsorted(widths, remaining).astype(np.int32)


def _window_logits(apply, params, tokens, attn_mask, kv, block, prompt_len: int, positions,
                   cfg: SamplerConfig):
  start = prompt_len + block * cfg.block_length
  if cfg.cache == "dual":
    return apply.window(params, tokens, attn_mask, kv, start, cfg.block_length, start,
                        positions)
  L = tokens.shape[1]
  widths, bucket = prefix_windows(cfg)
  branches = [lambda _, w=w: apply.window(params, tokens, attn_mask, kv, L - w, w, start,
                                          positions) for w in widths]
  if len(branches) == 1:
    return branches[0](None)
  return jax.lax.switch(jnp.asarray(bucket)[block], branches, None)


def cached_logits(apply, params, tokens, attn_mask, positions, cache: KVCache, block,
                  prompt_len: int, cfg: SamplerConfig):
  """(logits [rows, K, V] at `positions`, the cache after this step) for the network's
  input rows (with guidance: conditional rows then unconditional ones); `block` is the
  scalar block every row works on."""
  refresh = block != cache.block
  if cfg.refresh_every is not None:
    refresh = refresh | (cache.age >= cfg.refresh_every)
  shape = cache.k.shape
  flat = lambda x: x.reshape(shape[0], shape[1] * shape[2], *shape[3:])

  def fill(_):
    logits, (k, v) = apply.fill(params, tokens, attn_mask, positions)
    return logits, KVCache(k.reshape(shape), v.reshape(shape), block.astype(jnp.int32),
                           jnp.ones((), jnp.int32))

  def reuse(_):
    logits = _window_logits(apply, params, tokens, attn_mask, (flat(cache.k), flat(cache.v)),
                            block, prompt_len, positions, cfg)
    return logits, cache._replace(age=cache.age + 1)

  return jax.lax.cond(refresh, fill, reuse, None)


def kv_cache_bytes(n_layers: int, kv_heads: int, head_dim: int, dtype_bytes: int, batch: int,
                   length: int, *, guidance: bool = False, batch_shards: int = 1,
                   head_shards: int = 1) -> int:
  """Bytes of the K and V caches on one device: 2 (K, V) x n_layers x C x rows x length x
  kv_heads x head_dim x dtype bytes, with C = 2 under guidance, the rows split over
  `batch_shards` (data x fsdp) and the KV heads over `head_shards` (tensor) where they
  divide evenly (else kept whole, as `models.sharding.spec_for` does)."""
  rows = batch // batch_shards if batch % batch_shards == 0 else batch
  heads = kv_heads // head_shards if kv_heads % head_shards == 0 else kv_heads
  views = 2 if guidance else 1
  return 2 * n_layers * views * rows * length * heads * head_dim * dtype_bytes
