"""Settings of the GRPO family's objectives (`rl.method: diffu_grpo | coupled_grpo | wd1`,
docs/rl.md): `DiffuGRPOConfig`, `CoupledGRPOConfig`, `WD1Config`. Pure data.
"""

from __future__ import annotations

import dataclasses

from mro.method.search.settings import check_one_of

ADVANTAGES = ("centered", "normalized", "leave_one_out")
LOSS_NORMS = ("sequence", "tokens")
COUPLED_ESTIMATORS = ("pair", "released")


def _fraction(section: str, obj, name: str, low_open: bool = False) -> None:
  """Refuses a value outside [0, 1) (or (0, 1) with low_open), NaN included."""
  value = getattr(obj, name)
  inside = (0 < value < 1) if low_open else (0 <= value < 1)
  if not inside:
    raise ValueError(f"{section}.{name} must be in {'(0' if low_open else '[0'}, 1), "
                     f"got {value}")


def _check_clipped(section: str, obj) -> None:
  check_one_of(section, obj, "advantage", ADVANTAGES)
  check_one_of(section, obj, "loss_norm", LOSS_NORMS)
  if obj.clip_eps is not None and not obj.clip_eps > 0:
    raise ValueError(f"{section}.clip_eps must be positive or null, got {obj.clip_eps}")
  if not obj.kl_coef >= 0:
    raise ValueError(f"{section}.kl_coef must be >= 0, got {obj.kl_coef}")


@dataclasses.dataclass(frozen=True)
class DiffuGRPOConfig:
  """diffu-GRPO (d1, Zhao et al. 2025), `rl.method: diffu_grpo` (docs/rl.md).

  Per-token log-probabilities of a completion from one forward pass on [prompt with each
  real token masked with probability p_mask_prompt, completion fully masked] (mean-field);
  fresh masks on each of the rl.inner_steps steps, the same masks for π_old and π_ref.
  Loss: -min(ρ A, clip(ρ, 1 ± clip_eps) A) + kl_coef · k3-KL per completion token,
  averaged per completion then over completions (`loss_norm: sequence`, the paper's
  1/G Σ_i 1/|o_i| Σ_k) or over all tokens of the batch (`tokens`, the released code).
  `advantage`: centered r - mean (the released code), normalized (r - mean) / (std +
  1e-4), or leave_one_out. Defaults: the released configuration (p = 0.15, ε = 0.5,
  β = 0.04).
  """

  p_mask_prompt: float = 0.15
  clip_eps: float | None = 0.5
  kl_coef: float = 0.04
  advantage: str = "centered"
  loss_norm: str = "sequence"

  def __post_init__(self):
    _fraction("diffu_grpo", self, "p_mask_prompt")
    _check_clipped("diffu_grpo", self)


@dataclasses.dataclass(frozen=True)
class CoupledGRPOConfig:
  """coupled-GRPO (DiffuCoder, Gong et al. 2025), `rl.method: coupled_grpo` (docs/rl.md).

  Per completion a mask ratio t ~ U(t_min, t_max) and a mask m over the completion
  (each position masked with probability t) and its complement 1 - m, prompt visible:
  two forward passes, and each completion token's log-probability is read from the
  pass where it is masked, so every token is scored exactly once (`estimator: pair`).
  `released`: the public code's estimate, (log p_full + log p_m / t or log p_1-m / (1-t))
  / 2 with a third, fully masked pass. The clipped objective, KL, `advantage` and
  `loss_norm` are diffu-GRPO's. Defaults: the released configuration (t in [0.2, 0.8],
  ε = 0.5, β = 0.01, leave-one-out advantages without std scaling).
  """

  t_min: float = 0.2
  t_max: float = 0.8
  estimator: str = "pair"
  clip_eps: float | None = 0.5
  kl_coef: float = 0.01
  advantage: str = "leave_one_out"
  loss_norm: str = "sequence"

  def __post_init__(self):
    _fraction("coupled_grpo", self, "t_min", low_open=True)
    _fraction("coupled_grpo", self, "t_max", low_open=True)
    if not self.t_min <= self.t_max:
      raise ValueError(f"coupled_grpo.t_min={self.t_min} must be <= coupled_grpo.t_max="
                       f"{self.t_max}")
    check_one_of("coupled_grpo", self, "estimator", COUPLED_ESTIMATORS)
    _check_clipped("coupled_grpo", self)


@dataclasses.dataclass(frozen=True)
class WD1Config:
  """wd1 (Tang et al. 2025), `rl.method: wd1` (docs/rl.md): ratio-free weighted likelihood.

  loss = -(1/P) Σ_prompts Σ_i (w+_i - negative_weight · w-_i) log π_θ(o_i | q), with
  w+ = softmax_group(psi · A), w- = softmax_group(-psi · A) over the prompt's G
  completions and log π_θ(o_i | q) = Σ_k of d1's per-token estimate (prompt masked with
  p_mask_prompt, completion fully masked); no π_old, no π_ref. Defaults: the paper and
  its code (psi = 1, negative_weight = 1, p = 0.15, centered advantages).
  """

  p_mask_prompt: float = 0.15
  psi: float = 1.0
  negative_weight: float = 1.0
  advantage: str = "centered"

  def __post_init__(self):
    _fraction("wd1", self, "p_mask_prompt")
    check_one_of("wd1", self, "advantage", ADVANTAGES)
    if not self.psi > 0:
      raise ValueError(f"wd1.psi must be > 0, got {self.psi}")
    if not self.negative_weight >= 0:
      raise ValueError(f"wd1.negative_weight must be >= 0, got {self.negative_weight}")
