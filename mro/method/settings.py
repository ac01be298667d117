"""Settings of the MRO method: one frozen dataclass per concern, pure data.

- `SearchConfig`: the test-time search (candidates, group steps, selection); the same type
  drives `mro eval --search`, `mro sample --search` and the trajectories of reject sampling.
- `StartConfig`: the trained model reject sampling and RL start from, and its scorer.
- `RejectConfig`: which searched trajectories are kept and how they are trained on.
- `RLConfig`: the RL method (`method`), rollouts, SGRO groups, importance weights,
  baselines, KL.
- `DiffuGRPOConfig`, `CoupledGRPOConfig`, `WD1Config`: the objectives of the GRPO family
  (`rl.method: diffu_grpo | coupled_grpo | wd1`, docs/rl.md).
- `ValidationConfig`: the held-out accuracy that picks the best checkpoint.
- `CascadeConfig`: the verified cascade (decoders cheapest first, R_tv decides who
  escalates).

The rewards are `rewards.combine.RewardConfig`. This module imports no method code, so
experiment configs (mro/config.py) and the CLI can use these types without loading JAX
programs.
"""

from __future__ import annotations

import dataclasses
import math

from mro.sampling.schedule import SamplerConfig, resolve_steps

SELECT = ("argmax", "resample", "none")  # none: candidates never selected (best-of-N)
SEARCHES = ("mro", "best-of-n")
BASELINES = ("none", "group_mean")
Q_RULES = ("uniform", "advantage", "tokens")
KEEP_RULES = ("top1", "threshold", "quality")
STEP_TARGETS = ("committed", "masked")
RL_METHODS = ("mro", "diffu_grpo", "coupled_grpo", "wd1")
ADVANTAGES = ("centered", "normalized", "leave_one_out")
LOSS_NORMS = ("sequence", "tokens")
COUPLED_ESTIMATORS = ("pair", "released")


def _one_of(section: str, obj, name: str, choices: tuple[str, ...]) -> None:
  if getattr(obj, name) not in choices:
    raise ValueError(f"{section}.{name} must be one of {choices}, got {getattr(obj, name)!r}")


def _positive(section: str, obj, names) -> None:
  for name in names:
    value = getattr(obj, name)
    if value is not None and value < 1:
      raise ValueError(f"{section}.{name} must be >= 1, got {value}")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """MRO test-time search (method.md §5).

  Every `group_steps` (w) denoising steps, each of the `n_live` live sequences of a
  prompt expands into `k` candidates sampled at `temperature`; all candidates advance w
  steps as one batch, are scored, and `select` keeps n_live of them: `argmax` (the paper)
  or `resample` (draws ∝ exp(R / resample_temperature), importance resampling). `none`
  never selects: k independent samples picked at the end (best-of-N at equal NFE).
  `group_steps=None` = the sampler's steps / `search_points` (default 2: measured best on
  the shipped Sudoku model, 91.4% at L/4 against 88.7% with the paper's 4 points; the `mro`
  protocol keeps 4).
  `forward_chunks`: the candidates' forward passes in this many sequential slices
  (None = the pool on a CPU backend, where narrower batches are faster per row; 1 on
  accelerators); results are the same up to float rounding.
  `branch_steps`: the candidates sample at `temperature` only in the first branch_steps
  denoising steps, then decode greedily (None: every step): the k candidates of a prompt
  break the symmetry between answers early and each then follows one answer.
  `final_verify`: R_tv of the final group is measured over the whole answer instead of
  the positions that group committed: every content position is re-predicted, the answer
  re-masked in `final_verify` interleaved rows per candidate ("all": one row per
  position, the leave-one-out score; `rewards.verification.chunk_verification`). None:
  the final group is verified like the others. Needs the tv reward.
  """

  k: int = 4
  group_steps: int | None = None
  temperature: float = 1.0
  select: str = "argmax"
  resample_temperature: float = 1.0
  n_live: int = 1
  forward_chunks: int | None = None
  search_points: int = 2
  branch_steps: int | None = None
  final_verify: int | str | None = None

  def __post_init__(self):
    _positive("search", self, ("k", "n_live", "group_steps", "forward_chunks",
                               "search_points", "branch_steps"))
    if self.final_verify is not None and self.final_verify != "all" and (
        isinstance(self.final_verify, bool) or not isinstance(self.final_verify, int)
        or self.final_verify < 1):
      raise ValueError(f"search.final_verify must be a positive number of rows, 'all' or "
                       f"None, got {self.final_verify!r}")
    _one_of("search", self, "select", SELECT)
    if not self.temperature >= 0:  # also refuses NaN
      raise ValueError(f"search.temperature must be a number >= 0, got {self.temperature}")
    if not self.resample_temperature > 0:
      raise ValueError(f"search.resample_temperature must be > 0, got "
                       f"{self.resample_temperature}")

  @property
  def method(self) -> str:
    return "best-of-n" if self.select == "none" else "mro"

  @property
  def pool(self) -> int:
    return self.n_live * self.k

  def resolve(self, sampler: SamplerConfig) -> SearchConfig:
    """This search with group_steps filled in for `sampler`, checked against it."""
    sampler.refuse_correction("the search")
    w = self.group_steps or max(1, sampler.steps // self.search_points)
    if sampler.adaptive:
      raise ValueError("the search needs a fixed step schedule; unset threshold and factor")
    if sampler.steps % w:
      raise ValueError(f"steps={sampler.steps} is not divisible by group_steps={w}")
    if self.branch_steps is not None and self.branch_steps > sampler.steps:
      raise ValueError(f"search.branch_steps={self.branch_steps} is more than the "
                       f"{sampler.steps} steps")
    if isinstance(self.final_verify, int) and self.final_verify > sampler.gen_length:
      raise ValueError(f"search.final_verify={self.final_verify} rows is more than the "
                       f"{sampler.gen_length} response positions")
    return dataclasses.replace(self, group_steps=w)

  def final_rows(self, sampler: SamplerConfig) -> int:
    """Rows per candidate of the final answer-level R_tv (0 when off)."""
    if self.final_verify is None:
      return 0
    return sampler.gen_length if self.final_verify == "all" else self.final_verify

  def check_rewards(self, rewards) -> None:
    """ValueError when a search option needs a reward that `rewards` leaves off."""
    if self.final_verify is not None and not rewards.on("tv"):
      raise ValueError("search.final_verify re-predicts the answer for R_tv; turn tv on "
                       f"(--rewards), got rewards {rewards.spec!r}")

  def check(self, sampler: SamplerConfig) -> None:
    self.resolve(sampler)

  def chunks(self) -> int:
    if self.forward_chunks is not None:
      return self.forward_chunks
    import jax  # deferred: this module stays importable without starting JAX
    return self.pool if jax.default_backend() == "cpu" else 1


def search_config(method: str = "mro", **fields) -> SearchConfig:
  """A SearchConfig for `method` ("mro" or "best-of-n", which never selects)."""
  if method not in SEARCHES:
    raise ValueError(f"search must be one of {SEARCHES} (or none), got {method!r}")
  if method == "best-of-n":
    fields["select"] = "none"
  elif fields.get("select") == "none":
    raise ValueError("select=none is best-of-n; use --search best-of-n")
  return SearchConfig(**fields)


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
    _one_of("reject", self, "keep", KEEP_RULES)
    _one_of("reject", self, "targets", STEP_TARGETS)
    _positive("reject", self, ("n_opt",))


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
    _one_of("rl", self, "method", RL_METHODS)
    if self.method != "mro" and self.rollouts_per_prompt < 2:
      raise ValueError(f"rl.rollouts_per_prompt must be >= 2 for rl.method={self.method} "
                       f"(group-relative advantages), got {self.rollouts_per_prompt}")
    _one_of("rl", self, "baseline", BASELINES)
    _one_of("rl", self, "q_rule", Q_RULES)
    _positive("rl", self, ("group_steps", "rollouts_per_prompt", "prompts_per_batch",
                           "inner_steps", "n_opt"))
    if self.clip_eps is not None and not self.clip_eps > 0:
      raise ValueError(f"rl.clip_eps must be positive or null, got {self.clip_eps}")
    if not (self.kl_coef >= 0 and self.temperature >= 0):
      raise ValueError("rl.kl_coef and rl.temperature must be >= 0")
    if self.baseline == "group_mean" and self.rollouts_per_prompt < 2:
      raise ValueError("rl.baseline=group_mean needs rl.rollouts_per_prompt >= 2")


def _fraction(section: str, obj, name: str, low_open: bool = False) -> None:
  """Refuses a value outside [0, 1) (or (0, 1) with low_open), NaN included."""
  value = getattr(obj, name)
  inside = (0 < value < 1) if low_open else (0 <= value < 1)
  if not inside:
    raise ValueError(f"{section}.{name} must be in {'(0' if low_open else '[0'}, 1), "
                     f"got {value}")


def _check_clipped(section: str, obj) -> None:
  _one_of(section, obj, "advantage", ADVANTAGES)
  _one_of(section, obj, "loss_norm", LOSS_NORMS)
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
    _one_of("coupled_grpo", self, "estimator", COUPLED_ESTIMATORS)
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
    _one_of("wd1", self, "advantage", ADVANTAGES)
    if not self.psi > 0:
      raise ValueError(f"wd1.psi must be > 0, got {self.psi}")
    if not self.negative_weight >= 0:
      raise ValueError(f"wd1.negative_weight must be >= 0, got {self.negative_weight}")


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
  """Accuracy on held-out prompts every `every` steps; the best model is exported to
  workdir/best. `data`: a validation file (default: the task's validation split)."""

  every: int = 100
  limit: int = 128
  data: str | None = None

  def __post_init__(self):
    _positive("validation", self, ("every", "limit"))


_SAMPLER_FIELDS = tuple(f.name for f in dataclasses.fields(SamplerConfig))


def _stage_value(text: str):
  """A stage value: none, true/false, an integer, a number, else the text (L/2, dual)."""
  low = text.lower()
  if low in ("none", "null"):
    return None
  if low in ("true", "false"):
    return low == "true"
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def parse_stage(text: str) -> dict:
  """`threshold=0.99` or `steps=L/2,temperature=1` -> sampler fields (steps may be L/k)."""
  fields = {}
  for part in text.split(","):
    key, eq, value = (s.strip() for s in part.partition("="))
    if not eq or not key or not value:
      raise ValueError(f"cascade stage {text!r}: expected field=value[,field=value...], "
                       f"e.g. threshold=0.99 or steps=L/2")
    key = key.replace("-", "_")
    if key not in _SAMPLER_FIELDS:
      raise ValueError(f"cascade stage {text!r}: {key!r} is not a sampler field; known: "
                       f"{list(_SAMPLER_FIELDS)}")
    if key in fields:
      raise ValueError(f"cascade stage {text!r} sets {key} twice")
    fields[key] = _stage_value(value)
  return fields


@dataclasses.dataclass(frozen=True)
class CascadeConfig:
  """The verified cascade (`mro eval --search cascade`; beyond the paper, docs/method.md).

  Every prompt is decoded by the first stage (a sampler setting: the base sampler with
  the stage's fields replaced), and its answer is checked with R_tv over the whole
  answer in `verify_chunks` rows (`rewards.verification.chunk_verification`: the mean
  log-probability the model gives each committed token with a 1/verify_chunks share of
  the answer re-masked). An answer scoring >= `accept` is final; the other prompts go on
  to the next stage, and so on. Each prompt keeps the best-scoring answer of the stages
  it ran. A prompt's forward passes are those of the stages it ran plus verify_chunks per
  stage.

  stages: sampler fields per stage, cheapest first, as `field=value[,field=value]` texts
    (steps may be L or L/k) or mappings. Default: threshold 0.99 decoding (a few passes),
    then threshold 0.999, then the full L steps one token at a time: the best measured on
    the shipped Sudoku model's validation split, with the accept level chosen there too
    (README, "MRO at few steps").
  """

  stages: tuple = ("threshold=0.99", "threshold=0.999", "steps=L,threshold=none")
  accept: float = -1e-4
  verify_chunks: int = 3

  def __post_init__(self):
    stages = self.stages.split(";") if isinstance(self.stages, str) else self.stages
    stages = tuple(s if isinstance(s, str) else
                   ",".join(f"{k}={'none' if v is None else v}" for k, v in dict(s).items())
                   for s in stages)
    object.__setattr__(self, "stages", tuple(s.strip() for s in stages))
    if not self.stages:
      raise ValueError("cascade.stages is empty: give at least one sampler setting")
    for s in self.stages:
      parse_stage(s)
    if isinstance(self.accept, bool) or not isinstance(self.accept, (int, float)) \
        or not math.isfinite(self.accept):
      raise ValueError(f"cascade.accept must be a finite number (a mean log-probability), "
                       f"got {self.accept!r}")
    _positive("cascade", self, ("verify_chunks",))

  @property
  def method(self) -> str:
    return "cascade"

  def resolve(self, base: SamplerConfig) -> tuple[SamplerConfig, ...]:
    """One SamplerConfig per stage (ValueError naming the stage that does not fit)."""
    if self.verify_chunks > base.gen_length:
      raise ValueError(f"cascade.verify_chunks={self.verify_chunks} is more than the "
                       f"{base.gen_length} response positions")
    out = []
    for text in self.stages:
      fields = parse_stage(text)
      if "steps" in fields:
        fields["steps"] = resolve_steps(fields["steps"], fields.get("gen_length",
                                                                    base.gen_length))
      try:
        out.append(dataclasses.replace(base, **fields))
      except (TypeError, ValueError) as e:
        raise ValueError(f"cascade stage {text!r}: {e}") from None
      if out[-1].gen_length != base.gen_length:
        raise ValueError(f"cascade stage {text!r}: every stage answers with the same "
                         f"gen_length ({base.gen_length})")
    return tuple(out)

  def check(self, sampler: SamplerConfig) -> None:
    self.resolve(sampler)


def cascade_config(search: str, cascade_fields, other_options) -> CascadeConfig | None:
  """The cascade that `search` asks for (None for any other search). Cascade fields without
  search=cascade, and search or reward options (`other_options`: their names) with it,
  are refused by name."""
  if cascade_fields and search != "cascade":
    raise ValueError(f"cascade option(s) {sorted(cascade_fields)} need --search cascade")
  if search != "cascade":
    return None
  if other_options:
    raise ValueError(f"search option(s) {sorted(other_options)} do not apply to --search "
                     "cascade (its options: --stages, --accept, --verify-chunks)")
  return CascadeConfig(**cascade_fields)
