"""`mro rl` with a GRPO-family objective (`rl.method: diffu_grpo | coupled_grpo | wd1`,
docs/rl.md): the rollout batches, on the same rollouts, rewards and train loop as MRO-RL.

Every rl.inner_steps steps: rl.prompts_per_batch prompts x G = rl.rollouts_per_prompt
completions from the current policy (the compiled sampler with the config's `sampler`
section at rl.temperature; any sampler mode, since only the final tokens are used unless
R_tv / R_ppl are on). Each completion gets one scalar reward: the `rewards` section's
weighted sum of R_q on the final text and, when on, MRO's R_tv and R_ppl summed over the
trajectory's rl.group_steps groups. Rewards become group-relative advantages within each
prompt's G completions. For each inner step k the estimator's random masks are drawn
(keyed by the rollout's seed, row ids and k) and, for the clipped objectives, φ_old and
φ_ref are measured under them before any update; step k trains on slice k. Checkpoints
fall on rollout boundaries and rollouts are keyed by data position (as MRO-RL), so a
resumed run redraws the same rollouts and masks.
"""

from __future__ import annotations

import numpy as np

from models.sharding import host_array, shard_batch
from mro import config as exp_config
from mro.messages import quoted
from mro.method.finetuning import grpo
from mro.method.finetuning.losses import make_coupled_grpo_loss, make_diffu_grpo_loss, make_wd1_loss
from mro.method.finetuning.rollout_batches import RolloutBatches, take_rows
from mro.method.finetuning.rollouts import decode_states, intra_rewards, sample_rollouts
from rewards.quality import quality_reward

FINAL = np.iinfo(np.int32).max  # decode_states(t=FINAL): every committed token


def method_config(cfg: exp_config.ExperimentConfig):
  """The section of the configured GRPO-family method."""
  return getattr(cfg, cfg.rl.method)


def make_loss(cfg: exp_config.ExperimentConfig, mask_id: int, resp_start: int):
  method, mc = cfg.rl.method, method_config(cfg)
  if method == "diffu_grpo":
    return make_diffu_grpo_loss(mask_id, resp_start, mc)
  if method == "coupled_grpo":
    return make_coupled_grpo_loss(mask_id, resp_start, mc)
  if method == "wd1":
    return make_wd1_loss(mask_id, resp_start)
  raise ValueError(f"rl.method={quoted(method)} is not a GRPO-family method")


def noise_for(cfg: exp_config.ExperimentConfig, keys, step: int, prompt_attn, response_len):
  """(noise [B, S, L], pick [B, S, R]) of inner step `step` for the configured method."""
  mc = method_config(cfg)
  if cfg.rl.method == "coupled_grpo":
    noise, pick, _ = grpo.coupled_noise(keys, step, prompt_attn.shape[1], response_len,
                                        mc.t_min, mc.t_max, mc.estimator)
    return noise, pick
  return grpo.d1_noise(keys, step, prompt_attn, response_len, mc.p_mask_prompt)


def assemble(cfg: exp_config.ExperimentConfig, apply, params, ref_params, tokens, attn,
             rewards_B, eos_id: int, mask_id: int, prompt_len: int, seed: int, rows,
             mesh=None):
  """(shared arrays, per-inner-step arrays stacked on a leading axis of rl.inner_steps):
  everything a GRPO-family loss reads, from sampled sequences and their rewards.
  `params` is π_old (the policy that sampled); `ref_params` the frozen reference; `mesh`:
  their log-probabilities are computed sharded (rows over data x fsdp)."""
  m, mc = cfg.rl, method_config(cfg)
  B, L = tokens.shape
  R, K = L - prompt_len, m.rollouts_per_prompt
  adv = grpo.group_advantages(np.asarray(rewards_B).reshape(-1, K), mc.advantage)
  shared = {"tokens": np.asarray(tokens, np.int32), "attn_mask": np.asarray(attn, bool),
            "loss_mask": grpo.completion_mask(tokens[:, prompt_len:], eos_id)
            .astype(np.float32)}
  if m.method == "wd1":
    shared["weight"] = (K * grpo.wd1_weights(adv, mc.psi, mc.negative_weight)) \
        .reshape(B).astype(np.float32)
  else:
    shared["advantage"] = adv.reshape(B).astype(np.float32)
  keys = grpo.mask_keys(seed, rows)
  steps = [noise_for(cfg, keys, k, attn[:, :prompt_len], R) for k in range(m.inner_steps)]
  per_step = {"noise": np.stack([n for n, _ in steps]),
              "pick": np.stack([p for _, p in steps])}
  if m.method != "wd1":
    def estimate(p, k):
      args = (shared["tokens"], shared["attn_mask"], per_step["noise"][k], per_step["pick"][k])
      if mesh is not None:
        args = shard_batch(args, mesh)
      return host_array(grpo.jit_token_logprobs(apply, p, *args, resp_start=prompt_len,
                                                mask_id=mask_id))
    per_step["old_logp"] = np.stack([estimate(params, k) for k in range(m.inner_steps)])
    per_step["ref_logp"] = (np.stack([estimate(ref_params, k)
                                      for k in range(m.inner_steps)])
                            if mc.kl_coef else per_step["old_logp"])
  return shared, per_step


class GRPOBatches(RolloutBatches):
  """`next_batch` for the training loop: fresh rollouts every rl.inner_steps steps, and
  inner step k's slice of their masks and log-probabilities."""

  def __init__(self, cfg: exp_config.ExperimentConfig, start, examples, tokenizer):
    super().__init__(cfg, start, examples, tokenizer)
    self.per_step: dict | None = None

  def __call__(self, step: int, position: int, state, rows) -> tuple[dict, int, dict]:
    m = self.cfg.rl
    k = (step - 1) % m.inner_steps
    info: dict = {}
    if k == 0 or self.cached is None:
      (self.cached, self.per_step), info = self.rollout_batch(position, state.params)
      position += m.prompts_per_batch
    batch = {**self.cached, **{n: v[k] for n, v in self.per_step.items()}}
    return take_rows(batch, rows), position, info

  def rewards_of(self, examples, ro, params, seed: int, first_row: int):
    """(total reward [R], parts): R_q on the final text plus R_tv / R_ppl summed over the
    trajectory's groups (when on)."""
    cfg, R = self.cfg, len(ro.tokens)
    tv = ppl = q = np.zeros(R)
    if self.rewards.on("tv") or self.rewards.on("ppl"):
      w = cfg.rl.group_steps
      tv_g, ppl_g = intra_rewards(self.sampler.apply, params, self.runner.scorer_params, ro,
                                  cfg.sampler.steps // w, w, self.scoring, seed,
                                  first_row=first_row, mesh=self.sampler.mesh)
      tv, ppl = tv_g.sum(1), ppl_g.sum(1)
    if self.rewards.on("q"):
      ex = [examples[i] for i in ro.prompt_index]
      q = quality_reward(self.task, ex, decode_states(self.tokenizer, ro, FINAL),
                         list(ro.prompt_index), self.rewards.quality)
    return self.rewards.total(tv=tv, ppl=ppl, q=q), {"tv": tv, "ppl": ppl, "q": q}

  def rollout_batch(self, position: int, params):
    cfg, m = self.cfg, self.cfg.rl
    K = m.rollouts_per_prompt
    examples = self.prompts_at(position)
    seed = cfg.train.seed + position
    rows = np.arange(position * K, (position + len(examples)) * K)
    ro = sample_rollouts(self.sampler, [e.prompt for e in examples], self.rollout_cfg, K,
                         seed=seed, first_row=position * K, width=self.width, params=params)
    reward, parts = self.rewards_of(examples, ro, params, seed, position * K)
    special = self.tokenizer.special
    batch = assemble(cfg, self.sampler.apply, params, self.ref_params, ro.tokens,
                     ro.attn_mask, reward, special.eos, special.mask, ro.prompt_len, seed,
                     rows, self.sampler.mesh)
    spread = np.asarray(reward).reshape(-1, K).std(1)
    info = {"reward": float(np.mean(reward)), "r_tv": float(np.mean(parts["tv"])),
            "r_ppl": float(np.mean(parts["ppl"])), "r_q": float(np.mean(parts["q"])),
            "zero_std": float(np.mean(spread < 1e-6))}
    return batch, info
