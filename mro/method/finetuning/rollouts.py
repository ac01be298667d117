"""Rollouts for MRO training: sampled trajectories and their SGRO group rewards.

A rollout is stored compactly (final tokens + commit step per position). Its group
rewards are computed after the fact inside jit: the state at the end of each group is
rebuilt from the commit steps, then R_tv (leave-one-out re-prediction of positions the
group committed) and R_ppl (causal scorer on the committed tokens) are measured exactly
as the search measures them (`mro.method.search.mro_search.group_rewards`). R_q needs
decoded text and a task, so it is added on the host, to the last group (and, with shaping,
as the potential Φ = R_q of each group's end state: λ Φ(s_end) - Φ(s_start)).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from models.sharding import host_array, place_params, shard_batch
from models.tokenizers import truncate_at_eos
from mro.sampling.sampler import NOT_COMMITTED, DecodeState, row_keys
from mro.sampling.schedule import SamplerConfig
from mro.method.search.mro_search import Scoring, group_rewards
from rewards.quality import QualityConfig, quality_reward


@dataclasses.dataclass(frozen=True)
class Rollouts:
  tokens: np.ndarray  # int32[R, L]
  commit_step: np.ndarray  # int32[R, L]
  attn_mask: np.ndarray  # bool[R, L]
  prompt_index: np.ndarray  # int64[R]: which prompt (of the batch) each rollout answers
  prompt_len: int


def sample_rollouts(sampler, prompts: Sequence[str], cfg: SamplerConfig, per_prompt: int, *,
                    seed: int, first_row: int = 0, width: int | None = None,
                    params=None) -> Rollouts:
  """K = per_prompt trajectories of each prompt with the compiled sampler (one call).

  Row r answers prompt r // K; its random stream is keyed by first_row + r, so a rollout
  does not depend on the batch it was drawn in. `params`: the policy's current weights
  (default: the sampler's own).
  """
  cfg.refuse_correction("RL rollouts")
  rep = [p for p in prompts for _ in range(per_prompt)]
  rows = np.arange(first_row, first_row + len(rep))
  out, prompt_len = sampler.generate_tokens(rep, cfg, seed=seed, row_ids=rows, width=width,
                                            params=params)
  tokens = np.asarray(out.tokens)
  _, mask = sampler.encode_prompts(rep, width)
  attn = np.concatenate([mask.astype(bool), np.ones((len(rep), cfg.gen_length), bool)], 1)
  return Rollouts(tokens, np.asarray(out.commit_step), attn,
                  np.repeat(np.arange(len(prompts)), per_prompt), prompt_len)


@functools.partial(jax.jit, static_argnames=("apply", "prompt_len", "num_groups", "w",
                                             "scoring"))
def _intra_rewards(apply, params, scorer_params, tokens, commit, attn, keys, *, prompt_len,
                   num_groups, w, scoring: Scoring):
  def one_group(g):
    start, end = g * w, (g + 1) * w
    commit_g = jnp.where(commit < end, commit, NOT_COMMITTED)
    state = DecodeState(jnp.where(commit < end, tokens, scoring.mask_id), commit_g,
                        jax.vmap(lambda k: jax.random.fold_in(k, g))(keys), end)
    return group_rewards(apply, params, scorer_params, state, attn, prompt_len, start, scoring)
  tv, ppl = jax.lax.map(one_group, jnp.arange(num_groups))
  return tv.T, ppl.T  # [R, G]


def intra_rewards(apply, params, scorer_params, rollouts: Rollouts, num_groups: int, w: int,
                  scoring: Scoring, seed: int, first_row: int = 0, mesh=None):
  """(R_tv, R_ppl), each float32[R, G]: the intra rewards measured at each group's end.
  `mesh`: computed sharded (rows over data x fsdp), as the sampler is."""
  keys = row_keys(jax.random.key(seed + 7919), len(rollouts.tokens),
                  np.arange(first_row, first_row + len(rollouts.tokens)))
  rows = (rollouts.tokens, rollouts.commit_step, rollouts.attn_mask, keys)
  if mesh is not None:
    rows, scorer_params = shard_batch(rows, mesh), place_params(scorer_params, mesh)
  out = _intra_rewards(apply, params, scorer_params, *map(jnp.asarray, rows),
                       prompt_len=rollouts.prompt_len, num_groups=num_groups, w=w,
                       scoring=scoring)
  return tuple(host_array(x) for x in out)


def decode_states(tokenizer, rollouts: Rollouts, t: int) -> list[str]:
  """Response text of every rollout's state before step t (t = T: the final text)."""
  P, eos = rollouts.prompt_len, tokenizer.special.eos
  visible = rollouts.commit_step[:, P:] < t
  out = []
  for tok, vis in zip(rollouts.tokens[:, P:], visible):
    ids = [int(x) for x, v in zip(tok, vis) if v]
    out.append(tokenizer.decode(truncate_at_eos(ids, eos)))
  return out


def quality_per_group(task, examples, tokenizer, rollouts: Rollouts, num_groups: int, w: int,
                      cfg: QualityConfig, shaping: bool, shaping_lambda: float):
  """float32[R, G]: R_q on the last group (+ λ Φ(s_end) - Φ(s_start) shaping per group)."""
  R = len(rollouts.tokens)
  ex = [examples[i] for i in rollouts.prompt_index]
  groups = list(rollouts.prompt_index)
  score = lambda t: quality_reward(task, ex, decode_states(tokenizer, rollouts, t), groups, cfg)
  out = np.zeros((R, num_groups), np.float32)
  out[:, -1] = score(num_groups * w)
  if shaping:  # Φ(s_0) = 0: nothing is committed before the first group
    phi = np.stack([np.zeros(R)] + [score((g + 1) * w) for g in range(num_groups)], 1)
    out += potential_shaping(phi, shaping_lambda)
  return out


def potential_shaping(phi_RG1, shaping_lambda: float) -> np.ndarray:
  """float64[R, G]: the shaping reward λ Φ(s_end) - Φ(s_start) of each group, from the
  potential at the G + 1 group boundaries ([R, G + 1], Φ(s_0) first). Potential-based:
  over a trajectory it sums, discounted by λ, to λ^G Φ(s_T) - Φ(s_0) whatever path it took,
  so it changes which groups get credit, not which answers are best."""
  phi = np.asarray(phi_RG1, np.float64)
  return shaping_lambda * phi[:, 1:] - phi[:, :-1]
