"""The log-likelihood of a continuation under a masked diffusion model: the Monte-Carlo
bound that LLaDA's evaluation uses (for lm-evaluation-harness's `loglikelihood`).

A masked diffusion model gives no exact log p(x | c) for a continuation x of T tokens
after a context c, but a lower bound (LLaDA, eq. 6):

    B(x | c) = E_{k ~ U{1..T}} E_{S ⊂ x, |S| = k} [ (T / k) Σ_{i ∈ S} log p(x_i | c, x_{-S}) ]

where x_{-S} is x with the positions S masked; only continuation tokens are ever masked,
the context stays visible. Summed per k it is Σ_k (1/k) mean_{|S|=k} Σ_{i ∈ S} log p(...),
the same value as the continuous-time form E_t[(1/t) Σ_{masked at ratio t} log p]
(∫ t^(k-1) (1-t)^(T-k) dt = 1 / (k C(T, k))), so a weight of T/k for k masked tokens is the
1/t weight at the sampled ratio t = k/T.

`mc_loglikelihood` estimates B with `mc_num` samples per request. Sample j of a request
masks k_j = floor(T (u + j) / mc_num) + 1 tokens (u uniform, drawn per request): each k_j
is uniform on 1..T (unbiased), and together they are stratified (when T divides mc_num
every k gets the same share, as LLaDA's linspace over the batch does). The positions are a
uniform random subset of that size. The samples of all requests are packed into batches
of `batch_size` rows (requests sorted by length, each batch left-padded to a multiple of
16 columns, the last batch padded with copies of a row whose results are dropped), and
the output layer runs only on the continuation columns. Randomness is keyed by
(seed, request index): a request's estimate does not depend on the other requests, their
order or the batching. Full-vocabulary log-softmax, as in training and LLaDA's evaluation.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from models.sharding import host_array, shard_batch
from mro.sampling.sampler import left_pad
from mro.sampling.schedule import SamplerConfig

WIDTH_MULTIPLE = 16  # sequence columns are padded to a multiple of this (fewer compiles)
TARGET_MULTIPLE = 8  # and the continuation columns that get logits to a multiple of this


@dataclasses.dataclass(frozen=True)
class Estimate:
  logprob: float  # the Monte-Carlo estimate of the bound B(x | c)
  stderr: float  # its standard error: std of the per-sample values / sqrt(mc_num)


def round_up(n: int, multiple: int, cap: int) -> int:
  """n rounded up to a multiple of `multiple`, at most `cap` (but never below n)."""
  return max(n, min(cap, -(-n // multiple) * multiple))


def sample_masks(length: int, mc_num: int, rng: np.random.Generator) -> np.ndarray:
  """bool[mc_num, length]: which continuation tokens each sample masks (k stratified)."""
  u = rng.random()
  k = np.floor(length * (u + np.arange(mc_num)) / mc_num).astype(np.int64) + 1
  ranks = np.argsort(np.argsort(rng.random((mc_num, length)), axis=1), axis=1)
  return ranks < k[:, None]


@functools.partial(jax.jit, static_argnames=("apply", "mask_id", "cfg_scale"))
def _sample_values(apply, params, noisy_BL, attn_BL, context_BL, targets_BK, masked_BK,
                   weight_B, mask_id: int, cfg_scale: float):
  """Per row: weight x Σ over the masked continuation tokens of log p(token) (float32).
  The continuation ends every row; logits are computed for its last K columns only."""
  B, L = noisy_BL.shape
  K = targets_BK.shape[1]
  positions = jnp.broadcast_to(jnp.arange(L - K, L), (B, K))
  if cfg_scale == 0:
    logits = apply(params, noisy_BL, attn_BL, positions)
  else:  # LLaDA's guidance: the unconditional rows have the context masked too
    uncond = jnp.where(context_BL, mask_id, noisy_BL)
    both = apply(params, jnp.concatenate([noisy_BL, uncond]),
                 jnp.concatenate([attn_BL, attn_BL]), jnp.concatenate([positions, positions]))
    cond, unc = jnp.split(both, 2)
    logits = unc + (cfg_scale + 1.0) * (cond - unc)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  token_logp = jnp.take_along_axis(logp, targets_BK[..., None], axis=-1)[..., 0]
  return weight_B * jnp.sum(jnp.where(masked_BK, token_logp, 0.0), axis=-1)


def _batch_arrays(pairs, rows, masks, width: int, K: int, pad_id: int, mask_id: int):
  """The padded arrays of one batch; `rows` = (request, sample) per row."""
  B = len(rows)
  noisy = np.full((B, width), pad_id, np.int32)
  attn = np.zeros((B, width), bool)
  context = np.zeros((B, width), bool)
  masked = np.zeros((B, K), bool)
  targets = np.zeros((B, K), np.int32)
  weight = np.zeros((B,), np.float32)
  for b, (r, j) in enumerate(rows):
    ctx, cont = pairs[r]
    T, n = len(cont), len(ctx) + len(cont)
    seq = np.asarray(list(ctx) + list(cont), np.int32)
    m = masks[r][j]
    noisy[b, width - n:] = seq
    noisy[b, width - T:] = np.where(m, mask_id, seq[len(ctx):])
    attn[b, width - n:] = True
    context[b, width - n:width - T] = True
    targets[b, K - T:] = seq[len(ctx):]
    masked[b, K - T:] = m
    weight[b] = T / m.sum()
  return noisy, attn, context, targets, masked, weight


def mc_loglikelihood(apply, params, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                     mask_id: int, pad_id: int, max_seq_len: int, mc_num: int = 128,
                     batch_size: int = 32, seed: int = 0, cfg_scale: float = 0.0,
                     mesh=None) -> list[Estimate]:
  """One `Estimate` of B(continuation | context) per (context ids, continuation ids) pair
  (see the module docstring). An empty continuation has log-likelihood 0 exactly; an
  empty context is fine. `mesh`: rows split over data x fsdp (params already placed)."""
  if mc_num < 1 or batch_size < 1:
    raise ValueError(f"mc_num and the batch size must be positive, got mc_num={mc_num}, "
                     f"batch_size={batch_size}")
  for r, (ctx, cont) in enumerate(pairs):
    if len(ctx) + len(cont) > max_seq_len:
      raise ValueError(f"request {r}: context {len(ctx)} + continuation {len(cont)} tokens "
                       f"exceed the model's max_seq_len={max_seq_len}")
  masks = {r: sample_masks(len(cont), mc_num, np.random.default_rng([seed, r]))
           for r, (_, cont) in enumerate(pairs) if cont}
  order = sorted(masks, key=lambda r: -(len(pairs[r][0]) + len(pairs[r][1])))
  rows = [(r, j) for r in order for j in range(mc_num)]
  values = {r: np.zeros(mc_num) for r in masks}
  for start in range(0, len(rows), batch_size):
    real = rows[start:start + batch_size]
    batch = real + [real[0]] * (batch_size - len(real))
    longest = max(len(pairs[r][0]) + len(pairs[r][1]) for r, _ in real)
    width = round_up(longest, WIDTH_MULTIPLE, max_seq_len)
    K = round_up(max(len(pairs[r][1]) for r, _ in real), TARGET_MULTIPLE, width)
    arrays = _batch_arrays(pairs, batch, masks, width, K, pad_id, mask_id)
    if mesh is not None:
      arrays = shard_batch(arrays, mesh)
    out = host_array(_sample_values(apply, params, *arrays, mask_id=mask_id,
                                    cfg_scale=float(cfg_scale)))
    for (r, j), v in zip(real, out):
      values[r][j] = v
  return [Estimate(float(values[r].mean()), float(values[r].std() / np.sqrt(mc_num)))
          if r in values else Estimate(0.0, 0.0) for r in range(len(pairs))]


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
  """Token ids of (context, continuation) as lm-eval splits them: trailing spaces of the
  context move to the continuation; the continuation is the part of the whole text's
  encoding after the context's (encoded alone when the two do not line up)."""
  spaces = len(context) - len(context.rstrip(" "))
  if spaces:
    context, continuation = context[:-spaces], context[-spaces:] + continuation
  ctx = tokenizer.encode(context) if context else []
  whole = tokenizer.encode(context + continuation)
  if whole[:len(ctx)] == ctx:
    return ctx, whole[len(ctx):]
  return ctx, tokenizer.encode(continuation)


def greedy_matches(sampler, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                   remasking: str = "low_confidence", cfg_scale: float = 0.0,
                   batch_size: int = 16) -> list[bool]:
  """lm-eval's `is_greedy`: whether the model's greedy decoding of len(continuation)
  tokens after the context (one token per step, one block, temperature 0: LLaDA's check)
  reproduces the continuation exactly. Runs the compiled sampler of `sampler` (a
  TextSampler), one compile per continuation length. An empty continuation is greedy; a
  request with an empty context is reported False (the sampler needs a prompt)."""
  out = [not cont for _, cont in pairs]
  by_length: dict[int, list[int]] = {}
  for r, (ctx, cont) in enumerate(pairs):
    if ctx and cont:
      by_length.setdefault(len(cont), []).append(r)
  pad = sampler.tokenizer.special.pad
  cap = sampler.model_cfg.max_seq_len
  for T, reqs in sorted(by_length.items()):
    cfg = SamplerConfig(gen_length=T, steps=T, block_length=T, temperature=0.0,
                        remasking=remasking, cfg_scale=cfg_scale)
    reqs = sorted(reqs, key=lambda r: -len(pairs[r][0]))
    for start in range(0, len(reqs), batch_size):
      real = reqs[start:start + batch_size]
      idx = real + [real[0]] * (batch_size - len(real))
      tokens, mask = left_pad([list(pairs[r][0]) for r in idx], pad)
      extra = round_up(tokens.shape[1], WIDTH_MULTIPLE, cap - T) - tokens.shape[1]
      tokens = np.pad(tokens, ((0, 0), (extra, 0)), constant_values=pad)
      mask = np.pad(mask, ((0, 0), (extra, 0)))
      gen = sampler.generate_encoded(tokens, mask, cfg, seed=0, row_ids=np.asarray(idx))
      response = np.asarray(gen.tokens)[:, tokens.shape[1]:]
      for b, r in enumerate(real):
        out[r] = bool(np.array_equal(response[b], np.asarray(pairs[r][1])))
  return out
