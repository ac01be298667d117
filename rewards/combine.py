"""Which rewards are on, their weights and settings, and their weighted sum.

The paper sums the rewards without weights; weights here default to 1.0 (= the paper)
and a reward is off when it is not listed in `use`, so the paper's ablations are one flag
each: tv, ppl, q, tv+q, ppl+q, tv+ppl, all. A weight is given beside its reward in the
same spec: `--rewards tv,ppl=0.5,q=2` (CLI) or `rewards.use: "tv,ppl=0.5,q=2"` (config).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mro.messages import quoted
from rewards.quality import QualityConfig

REWARDS = ("tv", "ppl", "q")


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  """Which rewards are on, their weights, and the settings of each.

  `use` is a tuple of names or a spec string (`"tv,ppl=0.5,q"`: a weight beside its
  reward overrides w_<name>; `"all"`, `"none"`). The quality reward's settings
  (`quality_source`, `correct_value`, `format_value`) make its `QualityConfig`.
  """

  use: tuple[str, ...] | str = REWARDS
  w_tv: float = 1.0
  w_ppl: float = 1.0
  w_q: float = 1.0
  n_verify: int | str = 1  # positions re-predicted per group for R_tv, or "all" of them
  ppl_cap: float = 100.0  # C
  ppl_scale: float = 100.0  # F
  quality_source: str = "vote"
  correct_value: float = 1.0
  format_value: float = 0.5

  def __post_init__(self):
    if isinstance(self.use, str):
      names, weights = parse_reward_spec(self.use)
      object.__setattr__(self, "use", names)
      for name, w in weights.items():
        object.__setattr__(self, f"w_{name}", w)
    object.__setattr__(self, "use", tuple(self.use))
    unknown = sorted(set(self.use) - set(REWARDS))
    if unknown:
      raise ValueError(f"unknown reward(s) {quoted(unknown)}; choose from {REWARDS}")
    if len(set(self.use)) != len(self.use):
      raise ValueError(f"rewards listed twice in {self.use}")
    if self.n_verify != "all" and (isinstance(self.n_verify, bool)
                                   or not isinstance(self.n_verify, int)
                                   or self.n_verify < 1):
      raise ValueError(f"n_verify must be a positive integer or 'all', got {quoted(self.n_verify)}")
    if not (self.ppl_cap > 0 and self.ppl_scale > 0):
      raise ValueError("ppl_cap (C) and ppl_scale (F) must be positive")
    for name in ("w_tv", "w_ppl", "w_q", "correct_value", "format_value"):
      if not np.isfinite(getattr(self, name)):
        raise ValueError(f"rewards.{name} must be finite, got {getattr(self, name)}")
    self.quality  # validates quality_source

  @property
  def quality(self) -> QualityConfig:
    return QualityConfig(self.quality_source, self.correct_value, self.format_value)

  @property
  def spec(self) -> str:
    """The rewards as a spec string with their weights, e.g. 'tv,ppl=0.5,q'."""
    parts = [n if self.weight(n) == 1.0 else f"{n}={self.weight(n):g}" for n in self.use]
    return ",".join(parts) or "none"

  def on(self, name: str) -> bool:
    return name in self.use

  def weight(self, name: str) -> float:
    return getattr(self, f"w_{name}") if self.on(name) else 0.0

  def total(self, **values):
    """Weighted sum of the given reward values (off rewards contribute nothing)."""
    return total(self, **values)


def parse_reward_spec(text: str) -> tuple[tuple[str, ...], dict[str, float]]:
  """'tv,ppl=0.5,q' -> (('tv', 'ppl', 'q'), {'ppl': 0.5}): the rewards that are on and the
  weights given explicitly (the others keep 1.0). 'all' = every reward, 'none' or '' = none;
  '+' separates like ','."""
  text = text.strip()
  if text == "all":
    return REWARDS, {}
  if text in ("", "none"):
    return (), {}
  names, weights = [], {}
  for item in (t.strip() for t in text.replace("+", ",").split(",")):
    if not item:
      continue
    name, sep, value = (x.strip() for x in item.partition("="))
    if sep:
      try:
        weights[name] = float(value)
      except ValueError:
        raise ValueError(f"reward weight {quoted(item)}: {quoted(value)} is not a number") from None
      if not np.isfinite(weights[name]):
        raise ValueError(f"reward weight {quoted(item)} must be finite")
    names.append(name)
  unknown = sorted(set(names) - set(REWARDS))
  if unknown:
    raise ValueError(f"unknown reward(s) {quoted(unknown)}; choose from {REWARDS}, 'all' or "
                     "'none' "
                     "(a weight as name=value, e.g. 'tv,ppl=0.5')")
  return tuple(names), weights


def total(cfg: RewardConfig, **values) -> np.ndarray:
  """Weighted sum of the given reward arrays (off rewards contribute nothing)."""
  out = 0.0
  for name, value in values.items():
    if name not in REWARDS:
      raise ValueError(f"unknown reward {quoted(name)}")
    out = out + cfg.weight(name) * value
  return out
