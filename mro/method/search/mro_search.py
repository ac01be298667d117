"""MRO test-time search (method.md §5): group steps, rewards, argmax or importance resampling.

The T denoising steps are split into G = T / w groups. Each prompt keeps `n_live` live
sequences. At every group boundary each live sequence expands into k candidates
(different random streams, temperature τ), all B·n·k candidates advance w steps as one
batch, each is scored with the intra-sequence rewards of that group (R_tv, R_ppl), and
selection keeps n live sequences per prompt: the best ones (`select=argmax`, the paper)
or n draws with probabilities ∝ exp(R / resample_temperature) (`select=resample`,
importance resampling as in particle filters / FK steering). `select=none` never
selects: the n·k candidates run independently to the end (best-of-N at equal NFE).

After the last group the n·k final candidates of each prompt leave the compiled program
with their lineage's summed intra rewards; the quality reward R_q (label / vote /
verifier, on decoded text) is added on the host and the highest total is the answer.

Everything before that final pick is one compiled program per shape when the scorer
runs in jit (`CausalLMScorer`). A text scorer with its own tokenizer (`TextScorer`)
forces one host round trip per group; the same pieces run from a Python loop then.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from models.sharding import host_array, place_params, shard_batch
from mro.method.search.settings import SearchConfig
from mro.sampling.cache import new_cache
from mro.sampling.sampler import (NOT_COMMITTED, DecodeState, check_options, init_state,
                                  map_rows, response_attention, row_keys, run_steps)
from mro.sampling.schedule import SamplerConfig, block_of_step, tokens_per_step
from rewards.combine import RewardConfig
from rewards.perplexity import CausalLMScorer, TextScorer, ppl_reward
from rewards.verification import chunk_verification, token_verification

# Random streams derived from per-row keys (kept apart from the sampler's per-step folds).
_VERIFY_STREAM = 2**31 - 1
_SELECT_STREAM = 2**30


@dataclasses.dataclass(frozen=True)
class ChunkedApply:
  """`apply` over the rows in `chunks` sequential slices (lax.map); hashable like `apply`.
  Rows are prompt-major (row = b * pool + j), so slice j holds candidate j of every prompt.
  Falls back to one call when the rows do not split evenly."""

  apply: Any
  chunks: int

  def __call__(self, params, tokens_BL, attention_mask_BL=None, positions_BK=None):
    rows = tokens_BL.shape[0]
    if self.chunks == 1 or rows % self.chunks:
      return self.apply(params, tokens_BL, attention_mask_BL, positions_BK)
    split = lambda x: None if x is None else x.reshape(
        rows // self.chunks, self.chunks, *x.shape[1:]).swapaxes(0, 1)
    out = jax.lax.map(lambda xs: self.apply(params, *xs),
                      (split(tokens_BL), split(attention_mask_BL), split(positions_BK)))
    return out.swapaxes(0, 1).reshape(rows, *out.shape[2:])

  # With a KV cache the network runs on all candidate rows at once (no slices): a cached
  # step is small, and slicing would copy the cache's rows at every step.
  def fill(self, *args):
    return self.apply.fill(*args)

  def window(self, *args):
    return self.apply.window(*args)

  def cache_shape(self, *args):
    return self.apply.cache_shape(*args)


class SearchOutput(NamedTuple):
  tokens: jax.Array  # int32[B, N, L]: final candidates, N = n_live * k
  commit_step: jax.Array  # int32[B, N, L]
  intra: jax.Array  # float32[B, N]: summed intra-sequence rewards of each lineage
  r_tv: jax.Array  # float32[B, N, G]: R_tv of each group along each lineage
  r_ppl: jax.Array  # float32[B, N, G]


class Scoring(NamedTuple):
  """Everything the rewards need besides the candidates (static parts are hashable)."""
  rewards: RewardConfig
  mask_id: int
  fill_id: int  # the EOS id: pads compacted responses for the scorer; SamplerConfig.stop_at_eos
  scorer: Any = None  # CausalLMScorer (in jit) or None


def candidate_keys(prompt_keys_B, group: int, pool: int):
  """[B * pool] keys, distinct per prompt, group and pool slot."""
  def per_prompt(key):
    k = jax.random.fold_in(key, group)
    return jax.vmap(lambda j: jax.random.fold_in(k, j))(jnp.arange(pool))
  return jax.vmap(per_prompt)(prompt_keys_B).reshape(-1)


def group_rewards(apply, params, scorer_params, state: DecodeState, attn_mask, prompt_len,
                  group_start, scoring: Scoring, group_end=None):
  """(R_tv, R_ppl) per row for the steps [group_start, group_end) (default end:
  state.step). Both may be per row ([B]): commit steps count each row's own steps
  (`row_step`), which fall behind the loop's when a row idles (an adaptive rule kept to
  its steps finishing a block early, or a row stopped at EOS)."""
  cfg = scoring.rewards
  rows = state.tokens.shape[0]
  r_tv = r_ppl = jnp.zeros((rows,), jnp.float32)
  if cfg.on("tv"):
    end = jnp.broadcast_to(state.step if group_end is None else group_end, (rows,))[:, None]
    start = jnp.broadcast_to(group_start, (rows,))[:, None]
    new = (state.commit_step >= start) & (state.commit_step < end)
    keys = jax.vmap(lambda k: jax.random.fold_in(k, _VERIFY_STREAM))(state.keys)
    r_tv = token_verification(apply, params, state.tokens, attn_mask, new, keys, cfg.n_verify,
                              scoring.mask_id)
  if cfg.on("ppl") and isinstance(scoring.scorer, CausalLMScorer):
    committed = state.commit_step != NOT_COMMITTED
    logp, count = scoring.scorer.response_logp(scorer_params, state.tokens, attn_mask,
                                               committed, prompt_len, scoring.fill_id)
    r_ppl = ppl_reward(logp, count, cfg.ppl_cap, cfg.ppl_scale)
  return r_tv, r_ppl


def select(reward_BN, keys_B, scfg: SearchConfig):
  """Indices [B, n_live] into the pool of each prompt (one key per prompt)."""
  if scfg.select == "argmax":
    return jax.lax.top_k(reward_BN, scfg.n_live)[1]
  logits = reward_BN / scfg.resample_temperature
  draw = lambda k, l: jax.random.categorical(k, l, shape=(scfg.n_live,))
  return jax.vmap(draw)(keys_B, logits)


def _gather_rows(x, idx_Bn, B, N):
  """Rows of x ([B * N, ...]) picked per prompt by idx_Bn -> [B * n, ...]."""
  x = x.reshape(B, N, *x.shape[1:])
  picked = jnp.take_along_axis(x, idx_Bn.reshape(B, -1, *([1] * (x.ndim - 2))), axis=1)
  return picked.reshape(-1, *x.shape[2:])


class _Carry(NamedTuple):
  state: DecodeState  # [B * N] candidates after the group
  tv: jax.Array  # [B * N, G]
  ppl: jax.Array  # [B * N, G]


def select_survivors(carry: _Carry, g, prompt_keys, scfg: SearchConfig,
                     rewards: RewardConfig) -> _Carry:
  """Keeps n_live candidates per prompt by their rewards so far and expands each into k
  (new random streams). Everything a row carries is gathered with it, its KV cache rows
  included (`map_rows`), so a group may end inside a block: the k candidates go on from
  their parent's cache."""
  B, N = prompt_keys.shape[0], scfg.pool
  state, tv, ppl = carry
  reward = rewards.total(tv=tv.sum(1), ppl=ppl.sum(1)).reshape(B, N)
  keys = jax.vmap(lambda k: jax.random.fold_in(k, _SELECT_STREAM + g))(prompt_keys)
  idx = select(reward, keys, scfg)
  pick = lambda x: jnp.repeat(_gather_rows(x, idx, B, N), scfg.k, axis=0)
  state = map_rows(state, pick)._replace(keys=candidate_keys(prompt_keys, g, N))
  return _Carry(state, pick(tv), pick(ppl))


def advance(apply, params, state: DecodeState, attn_mask, prompt_len, cfg: SamplerConfig,
            scfg: SearchConfig, scoring: Scoring, stop) -> DecodeState:
  """The candidates' steps up to `stop`: at the search temperature, or with
  `branch_steps`, at it only before step branch_steps and greedily after."""
  run = lambda s, c, end: run_steps(apply, params, s, attn_mask, prompt_len, c,
                                    scoring.mask_id, stop=end, eos_id=scoring.fill_id)
  if scfg.branch_steps is None:
    return run(state, cfg, stop)
  state = run(state, cfg, jnp.minimum(stop, scfg.branch_steps))
  return run(state, dataclasses.replace(cfg, temperature=0.0), stop)


def final_verification(apply, params, carry: _Carry, attn_mask, prompt_len: int,
                       cfg: SamplerConfig, scfg: SearchConfig, scoring: Scoring) -> _Carry:
  """With `final_verify`: the final group's R_tv becomes the whole answer's
  (`chunk_verification` in final_rows rows per candidate)."""
  if scfg.final_verify is None or not scoring.rewards.on("tv"):
    return carry
  score, _ = chunk_verification(apply, params, carry.state.tokens, attn_mask, prompt_len,
                                scfg.final_rows(cfg), scoring.mask_id, scoring.fill_id)
  return carry._replace(tv=carry.tv.at[:, -1].set(score))


def _group_step(apply, params, scorer_params, carry: _Carry, g, prompt_keys, attn_mask,
                prompt_len, cfg: SamplerConfig, scfg: SearchConfig, scoring: Scoring):
  """Selection among the previous group's candidates, expansion, w steps, scoring."""
  if scfg.select != "none":
    carry = select_survivors(carry, g, prompt_keys, scfg, scoring.rewards)
  state, tv, ppl = carry
  start, row_start = state.step, state.row_step
  state = advance(apply, params, state, attn_mask, prompt_len, cfg, scfg, scoring,
                  start + scfg.group_steps)
  r_tv, r_ppl = group_rewards(apply, params, scorer_params, state, attn_mask, prompt_len,
                              row_start, scoring, group_end=state.row_step)
  return _Carry(state, tv.at[:, g].set(r_tv), ppl.at[:, g].set(r_ppl))


def _init(apply, params, prompt_BP, prompt_mask_BP, prompt_keys, cfg: SamplerConfig,
          scfg: SearchConfig, mask_id: int):
  B, P = prompt_BP.shape
  N, G = scfg.pool, cfg.steps // scfg.group_steps
  tokens = jnp.repeat(prompt_BP, N, axis=0)
  attn = None if prompt_mask_BP is None else response_attention(
      jnp.repeat(prompt_mask_BP, N, axis=0), cfg.gen_length)
  cache = new_cache(apply, params, B * N, P + cfg.gen_length, cfg)
  state = init_state(tokens, cfg.gen_length, candidate_keys(prompt_keys, 0, N), mask_id, cache)
  zeros = jnp.zeros((B * N, G), jnp.float32)
  return _Carry(state, zeros, zeros), attn


def _output(carry: _Carry, rewards: RewardConfig, B: int, N: int) -> SearchOutput:
  intra = rewards.total(tv=carry.tv.sum(1), ppl=carry.ppl.sum(1))
  r = lambda x: x.reshape(B, N, *x.shape[1:])
  return SearchOutput(r(carry.state.tokens), r(carry.state.commit_step), r(intra),
                      r(carry.tv), r(carry.ppl))


@functools.partial(jax.jit, static_argnames=("apply", "cfg", "scfg", "scoring"))
def _search_compiled(apply, params, scorer_params, prompt_BP, prompt_mask_BP, prompt_keys,
                     cfg, scfg, scoring):
  B, P = prompt_BP.shape
  cfg_tau = dataclasses.replace(cfg, temperature=scfg.temperature)
  carry, attn = _init(apply, params, prompt_BP, prompt_mask_BP, prompt_keys, cfg_tau, scfg,
                      scoring.mask_id)
  body = lambda g, c: _group_step(apply, params, scorer_params, c, g, prompt_keys, attn, P,
                                  cfg_tau, scfg, scoring)
  # Group 0 runs the same body: its selection is a no-op (every pool row is still the
  # prompt, with rewards 0, and gets back the keys it started with), so one trace serves
  # every group.
  carry = jax.lax.fori_loop(0, cfg.steps // scfg.group_steps, body, carry)
  carry = final_verification(apply, params, carry, attn, P, cfg, scfg, scoring)
  return _output(carry, scoring.rewards, B, scfg.pool)


_group_step_jit = jax.jit(_group_step, static_argnames=("apply", "prompt_len", "cfg", "scfg",
                                                      "scoring"))
_final_jit = jax.jit(final_verification, static_argnames=("apply", "prompt_len", "cfg", "scfg",
                                                          "scoring"))


def group_positions(cfg: SamplerConfig, group_steps: int) -> int:
  """The most response positions one group of `group_steps` steps commits: what R_tv
  re-predicts with n_verify = "all". Fixed schedule: the largest step's tokens times the
  steps; an adaptive rule kept to its steps (fixed_steps) may commit a whole block in one
  step: every position of the blocks the group's steps work on."""
  if not cfg.adaptive:
    return int(tokens_per_step(cfg).max()) * group_steps
  blocks = block_of_step(cfg)
  return max(len(set(blocks[g:g + group_steps].tolist())) for g in
             range(0, cfg.steps, group_steps)) * cfg.block_length


def verify_count(rewards: RewardConfig, cfg: SamplerConfig, group_steps: int) -> RewardConfig:
  """`rewards` with n_verify as a count: "all" becomes every position a group of
  `group_steps` steps of `cfg` commits (the schedule is only read then)."""
  if rewards.n_verify != "all":
    return rewards
  return dataclasses.replace(rewards, n_verify=group_positions(cfg, group_steps))


def resolve_scoring(scoring: Scoring, cfg: SamplerConfig, group_steps: int) -> Scoring:
  """`scoring` with n_verify as a count for groups of `group_steps` steps of `cfg`."""
  return scoring._replace(rewards=verify_count(scoring.rewards, cfg, group_steps))


def search_nfe(cfg: SamplerConfig, scfg: SearchConfig, rewards: RewardConfig) -> dict:
  """Forward passes per prompt: mask-predictor rows and scorer rows."""
  scfg = scfg.resolve(cfg)
  rewards = verify_count(rewards, cfg, scfg.group_steps)
  groups = cfg.steps // scfg.group_steps
  verify = scfg.pool * (groups * rewards.n_verify + scfg.final_rows(cfg)) \
      if rewards.on("tv") else 0
  scorer = scfg.pool * groups if rewards.on("ppl") else 0
  return {"nfe": scfg.pool * cfg.steps + verify, "scorer_nfe": scorer}


def forward_chunks(scfg: SearchConfig, backend: str | None = None) -> int:
  """The slices the candidates' forward passes run in: `scfg.forward_chunks`, or where the
  config leaves it (None) the pool on a CPU backend (narrower batches are faster per row
  there) and 1 on accelerators. `backend`: the JAX backend (default: this process's)."""
  if scfg.forward_chunks is not None:
    return scfg.forward_chunks
  backend = jax.default_backend() if backend is None else backend
  return scfg.pool if backend == "cpu" else 1


def run_search(apply, params, prompt_BP, cfg: SamplerConfig, scfg: SearchConfig,
               scoring: Scoring, *, scorer_params=None, key=None, row_ids=None,
               prompt_mask_BP=None, text_scorer: TextScorer | None = None,
               decode=None, mesh=None) -> SearchOutput:
  """The search up to (not including) the final quality-based pick.

  With `text_scorer` (a scorer with its own tokenizer), groups run from a Python loop
  and `decode(tokens [rows, L]) -> (prompts, responses)` turns candidates into text once
  per group. Otherwise the whole search is one compiled call. `mesh`: run sharded, as
  `mro.sampling.sampler.generate` does (rows over data x fsdp, which must divide the batch).
  """
  scfg = scfg.resolve(cfg)
  scfg.check_rewards(scoring.rewards)
  scoring = resolve_scoring(scoring, cfg, scfg.group_steps)
  check_options(apply, cfg, scoring.fill_id)
  chunks = forward_chunks(scfg)
  if chunks > 1:
    apply = ChunkedApply(apply, chunks)
  prompt_BP = jnp.asarray(prompt_BP, jnp.int32)
  key = jax.random.key(0) if key is None else key
  prompt_keys = row_keys(key, prompt_BP.shape[0], row_ids)
  mask = None if prompt_mask_BP is None else jnp.asarray(prompt_mask_BP)
  if mesh is not None:  # sharded run: same program, inputs placed (see sampler.generate)
    params, scorer_params = place_params((params, scorer_params), mesh)
    prompt_BP, mask, prompt_keys = shard_batch((prompt_BP, mask, prompt_keys), mesh)
  if text_scorer is None:
    return _search_compiled(apply, params, scorer_params, prompt_BP, mask, prompt_keys, cfg,
                            scfg, scoring)
  return _search_host_loop(apply, params, prompt_BP, mask, prompt_keys, cfg, scfg, scoring,
                           text_scorer, decode)


def _search_host_loop(apply, params, prompt_BP, mask, prompt_keys, cfg, scfg, scoring,
                      text_scorer, decode):
  """Same groups as `_search_compiled`, with R_ppl from a text scorer between groups."""
  B, P = prompt_BP.shape
  cfg_tau = dataclasses.replace(cfg, temperature=scfg.temperature)
  carry, attn = _init(apply, params, prompt_BP, mask, prompt_keys, cfg_tau, scfg,
                      scoring.mask_id)
  # Commit every leaf where it lies: arrays made outside jit are uncommitted, the group
  # step's outputs are committed, and the two would compile the group step twice.
  carry = jax.device_put(carry, jax.tree.map(lambda x: x.sharding, carry))
  for g in range(cfg.steps // scfg.group_steps):  # g is traced: one compile for all groups
    carry = _group_step_jit(apply, params, None, carry, jnp.int32(g), prompt_keys, attn,
                            prompt_len=P, cfg=cfg_tau, scfg=scfg, scoring=scoring)
    if scoring.rewards.on("ppl"):
      tokens = host_array(jnp.where(carry.state.commit_step < carry.state.step,
                                    carry.state.tokens, scoring.mask_id))
      prompts, responses = decode(tokens)
      logp, count = text_scorer.response_logp(prompts, responses)
      r = ppl_reward(jnp.asarray(logp), jnp.asarray(count), scoring.rewards.ppl_cap,
                     scoring.rewards.ppl_scale)
      carry = carry._replace(ppl=carry.ppl.at[:, g].set(r))
  carry = _final_jit(apply, params, carry, attn, prompt_len=P, cfg=cfg, scfg=scfg,
                     scoring=scoring)
  return _output(carry, scoring.rewards, B, scfg.pool)
