"""MRO-RL's rollout batches (`rl.method: mro`, method.md §3-§5): what the training loop
trains on, drawn from the current policy every rl.inner_steps steps.

Every rollout batch: rl.prompts_per_batch training prompts, rl.rollouts_per_prompt
trajectories each from the current policy (compiled sampler at rl.temperature).
Each trajectory's G = steps / w groups get rewards (R_tv, R_ppl at the group's end; R_q
on the last group; optional shaping), minus a baseline (`none`, the paper, or
`group_mean`, leave-one-out over the prompt's rollouts). n_opt groups per trajectory
are drawn with probabilities q_g and weighted 1 / (n_opt q_g)
(mro/method/finetuning/sgro.py); log π_old of their steps is recorded for the SGRO loss.
The GRPO family's batches (grpo_batches.py) extend these.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from models.sharding import host_array, shard_batch
from mro import config as exp_config
from mro.method.finetuning import sgro
from mro.method.finetuning.rollouts import intra_rewards, quality_per_group, sample_rollouts
from mro.method.finetuning.starting_model import Start
from mro.method.finetuning.trajectory import step_logprobs
from mro.method.search.mro_search import Scoring, resolve_scoring
from mro.method.search.runner import SearchRunner
from rewards.tasks import get_task


@functools.partial(jax.jit, static_argnames=("apply", "resp_start", "mask_id"))
def _logp(apply, params, tokens, commit, attn, steps, *, resp_start, mask_id):
  return step_logprobs(apply, params, tokens, commit, attn, steps, resp_start, mask_id)[0]


def take_rows(batch: dict, rows) -> dict:
  """Rows `rows` of every array of a batch (a process's share of it)."""
  return {k: np.asarray(v)[rows] for k, v in batch.items()}


class RolloutBatches:
  """`next_batch` for the training loop: a fresh rollout batch every inner_steps steps."""

  def __init__(self, cfg: exp_config.ExperimentConfig, start: Start, examples, tokenizer):
    self.cfg, self.examples, self.tokenizer = cfg, examples, tokenizer
    self.task = get_task(cfg.data.task)
    self.sampler = start.sampler
    self.ref_params = start.params  # the frozen reference for the KL term
    self.runner = SearchRunner(start.sampler, start.scorer, start.scorer_tokenizer)
    self.rewards = cfg.rewards
    if self.rewards.on("ppl") and self.runner.scorer is None:
      raise ValueError("RL computes R_ppl inside jit: start.scorer must share the model's "
                       "tokenizer (the shipped default scorers do)")
    self.rollout_cfg = dataclasses.replace(cfg.sampler,
                                           temperature=cfg.rl.temperature)
    self.scoring = resolve_scoring(
        Scoring(self.rewards, tokenizer.special.mask, tokenizer.special.eos,
                self.runner.scorer), self.rollout_cfg, cfg.rl.group_steps)
    self.width = start.sampler.encode_prompts([e.prompt for e in examples])[0].shape[1]
    self.cached: dict | None = None

  def prompts_at(self, position: int) -> list:
    n, m = len(self.examples), self.cfg.rl.prompts_per_batch
    order = lambda epoch: np.random.default_rng([self.cfg.data.seed, epoch]).permutation(n)
    return [self.examples[order(g // n)[g % n]] for g in range(position, position + m)]

  def __call__(self, step: int, position: int, state, rows) -> tuple[dict, int, dict]:
    """Rows `rows` of the step's batch (each process trains on its own rows of it)."""
    m = self.cfg.rl
    if (step - 1) % m.inner_steps and self.cached is not None:
      return take_rows(self.cached, rows), position, {}
    batch, info = self.rollout_batch(position, state.params)
    self.cached = batch
    return take_rows(batch, rows), position + m.prompts_per_batch, info

  def logp(self, params, tokens, commit, attn, steps, resp_start: int):
    """log π of each trajectory's chosen steps under `params` (sharded as the sampler)."""
    args = (tokens, commit, attn, steps)
    if self.sampler.mesh is not None:
      args = shard_batch(args, self.sampler.mesh)
    return host_array(_logp(self.sampler.apply, params, *map(jnp.asarray, args),
                            resp_start=resp_start, mask_id=self.tokenizer.special.mask))

  def rollout_batch(self, position: int, params) -> tuple[dict, dict]:
    cfg, m = self.cfg, self.cfg.rl
    K, w = m.rollouts_per_prompt, m.group_steps
    G = cfg.sampler.steps // w
    examples = self.prompts_at(position)
    seed = cfg.train.seed + position
    ro = sample_rollouts(self.sampler, [e.prompt for e in examples], self.rollout_cfg, K,
                         seed=seed, first_row=position * K, width=self.width, params=params)
    tv, ppl = intra_rewards(self.sampler.apply, params, self.runner.scorer_params, ro, G, w,
                            self.scoring, seed, first_row=position * K,
                            mesh=self.sampler.mesh)
    q = np.zeros_like(tv)
    if self.rewards.on("q"):
      q = quality_per_group(self.task, examples, self.tokenizer, ro, G, w,
                            self.rewards.quality, m.shaping, m.shaping_lambda)
    reward = self.rewards.total(tv=tv, ppl=ppl, q=q)
    base = sgro.baseline(reward.reshape(-1, K, G), m.baseline).reshape(reward.shape)
    adv = jnp.asarray(reward - base)
    P = ro.prompt_len
    tokens = sgro.tokens_per_group(ro.commit_step[:, P:], G, w)
    q_probs = sgro.selection_probs(m.q_rule, adv, jnp.asarray(tokens))
    groups, weights = sgro.select_groups(jax.random.key(seed), q_probs, m.n_opt)
    steps, _ = sgro.group_steps(groups, w)
    args = (ro.tokens, ro.commit_step, ro.attn_mask, np.asarray(steps))
    old = self.logp(params, *args, P)
    ref = self.logp(self.ref_params, *args, P) if m.kl_coef else old
    batch = {"tokens": args[0], "commit_step": args[1], "attn_mask": args[2], "steps": steps,
             "advantage": sgro.per_step(jnp.take_along_axis(adv, groups, 1), w),
             "weight": sgro.per_step(weights, w), "old_logp": old, "ref_logp": ref}
    batch = jax.tree.map(np.asarray, batch)
    info = {"reward": float(reward.sum(1).mean()), "r_tv": float(tv.mean()),
            "r_ppl": float(ppl.mean()), "r_q": float(q[:, -1].mean())}
    return batch, info
