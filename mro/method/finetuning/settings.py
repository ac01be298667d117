"""Settings of fine-tuning with MRO's rewards, pure data (no JAX programs), so experiment
configs (mro/config.py) and the CLI can use them cheaply.

- `StartConfig`: the trained model reject sampling and RL start from, and its scorer.
- `RejectConfig`: which searched trajectories are kept and how they are trained on.
- `RLConfig`: the RL method (`method`), rollouts, SGRO groups, importance weights,
  baselines, KL.
- `ValidationConfig`: the held-out accuracy that picks the best checkpoint.

The GRPO family's own sections are in grpo_settings.py, the search's in
mro/method/search/settings.py, the rewards are `rewards.combine.RewardConfig`.
"""

from __future__ import annotations

import dataclasses

from mro.method.search.settings import check_one_of, check_positive

BASELINES = ("none", "group_mean")
Q_RULES = ("uniform", "advantage", "tokens")
KEEP_RULES = ("top1", "threshold", "quality")
STEP_TARGETS = ("committed", "masked")
RL_METHODS = ("mro", "diffu_grpo", "coupled_grpo", "wd1")


@dataclasses.dataclass(frozen=True)
class StartConfig:
  """The model reject sampling and RL start from (`default` = the shipped one for
  data.task) and the causal scorer of R_ppl (`default` = the shipped one)."""

  model: str | None = None
  scorer: str | None = None


@dataclasses.dataclass(frozen=True)
class RejectConfig:
  """MRO reject sampling (`mro reject-sample`): trajectories come from the search
  (`search` section), scored with the `rewards` section.

  keep: `top1` per prompt, `threshold` (every final candidate whose total reward is
    >= keep_threshold), or `quality` (per prompt the highest-total candidate among those
    whose R_q alone is >= keep_threshold, none if no candidate passes: with R_q from the
    label, 1.0 keeps right answers only; needs `q` in rewards.use).
  stepwise: the step-wise loss on n_opt consecutive random steps of each trajectory; false:
    plain SFT on the kept final answers.
  targets: what the step-wise loss predicts from the state s_t before step t: `masked`
    (default; every position still masked in s_t, with the trajectory's final tokens: the
    state has to predict the whole rest of the answer, which is what a sampler with fewer
    steps asks of it; beyond the paper, measured better at few steps) or `committed` (the
    paper: the tokens committed at t).
  """

  keep: str = "top1"
  keep_threshold: float = 1.0
  stepwise: bool = True
  n_opt: int = 2
  targets: str = "masked"

  def __post_init__(self):
    check_one_of("reject", self, "keep", KEEP_RULES)
    check_one_of("reject", self, "targets", STEP_TARGETS)
    check_positive("reject", self, ("n_opt",))


@dataclasses.dataclass(frozen=True)
class RLConfig:
  """RL (`mro rl`). `method`: `mro` (MRO-RL: REINFORCE over SGRO groups with importance
  sampling, the fields below) or a GRPO-family objective (`diffu_grpo`, `coupled_grpo`,
  `wd1`: their own sections; of this one they use rollouts_per_prompt = G,
  prompts_per_batch, inner_steps = μ and temperature).

  Rollouts: prompts_per_batch prompts x rollouts_per_prompt trajectories from the policy
  at `temperature`; SGRO groups of `group_steps` denoising steps; n_opt groups per
  trajectory drawn by `q_rule` and weighted 1 / (n_opt q); `inner_steps` gradient steps
  per rollout batch (the importance ratio after the first, clipped at clip_eps unless
  null); `baseline` none (the paper) or group_mean (leave-one-out over the prompt's
  rollouts); optional KL to the starting model and potential-based shaping with R_q.
  """

  method: str = "mro"
  group_steps: int = 4
  temperature: float = 0.25
  rollouts_per_prompt: int = 4
  prompts_per_batch: int = 8
  inner_steps: int = 2
  n_opt: int = 2
  clip_eps: float | None = 0.2
  baseline: str = "none"
  q_rule: str = "uniform"
  kl_coef: float = 0.0
  shaping: bool = False
  shaping_lambda: float = 1.0

  def __post_init__(self):
    check_one_of("rl", self, "method", RL_METHODS)
    if self.method != "mro" and self.rollouts_per_prompt < 2:
      raise ValueError(f"rl.rollouts_per_prompt must be >= 2 for rl.method={self.method} "
                       f"(group-relative advantages), got {self.rollouts_per_prompt}")
    check_one_of("rl", self, "baseline", BASELINES)
    check_one_of("rl", self, "q_rule", Q_RULES)
    check_positive("rl", self, ("group_steps", "rollouts_per_prompt", "prompts_per_batch",
                                "inner_steps", "n_opt"))
    if self.clip_eps is not None and not self.clip_eps > 0:
      raise ValueError(f"rl.clip_eps must be positive or null, got {self.clip_eps}")
    if not (self.kl_coef >= 0 and self.temperature >= 0):
      raise ValueError("rl.kl_coef and rl.temperature must be >= 0")
    if self.baseline == "group_mean" and self.rollouts_per_prompt < 2:
      raise ValueError("rl.baseline=group_mean needs rl.rollouts_per_prompt >= 2")


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
  """Accuracy on held-out prompts every `every` steps; the best model is exported to
  workdir/best. `data`: a validation file (default: the task's validation split).
  `steps`: denoising steps of the validation decode (default: the sampler's), so a run
  whose trajectories use many steps can pick its checkpoint by few-step accuracy."""

  every: int = 100
  limit: int = 128
  data: str | None = None
  steps: int | None = None

  def __post_init__(self):
    check_positive("validation", self, ("every", "limit", "steps"))
