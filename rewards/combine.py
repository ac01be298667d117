"""Which rewards are on, their weights and settings, and their weighted sum.

The paper sums the rewards without weights; weights here default to 1.0 (= the paper)
and a reward is off when it is not listed in `use`, so the paper's ablations are one flag
each: tv, ppl, q, tv+q, ppl+q, tv+ppl, all.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rewards.quality import QualityConfig

REWARDS = ("tv", "ppl", "q")


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  use: tuple[str, ...] = REWARDS
  w_tv: float = 1.0
  w_ppl: float = 1.0
  w_q: float = 1.0
  n_verify: int = 1  # positions re-predicted per group for R_tv
  ppl_cap: float = 100.0  # C
  ppl_scale: float = 100.0  # F
  quality: QualityConfig = QualityConfig()

  def __post_init__(self):
    unknown = sorted(set(self.use) - set(REWARDS))
    if unknown:
      raise ValueError(f"unknown reward(s) {unknown}; choose from {REWARDS}")
    if len(set(self.use)) != len(self.use):
      raise ValueError(f"rewards listed twice in {self.use}")
    if self.n_verify < 1:
      raise ValueError(f"n_verify must be >= 1, got {self.n_verify}")
    if self.ppl_cap <= 0 or self.ppl_scale <= 0:
      raise ValueError("ppl_cap (C) and ppl_scale (F) must be positive")

  def on(self, name: str) -> bool:
    return name in self.use

  def weight(self, name: str) -> float:
    return getattr(self, f"w_{name}") if self.on(name) else 0.0


def parse_rewards(text: str) -> tuple[str, ...]:
  """'tv,ppl,q' or 'all' or 'none' -> a tuple of reward names (validated)."""
  text = text.strip()
  if text == "all":
    return REWARDS
  if text in ("", "none"):
    return ()
  names = tuple(t.strip() for t in text.replace("+", ",").split(",") if t.strip())
  unknown = sorted(set(names) - set(REWARDS))
  if unknown:
    raise ValueError(f"unknown reward(s) {unknown}; choose from {REWARDS}, 'all' or 'none'")
  return names


def total(cfg: RewardConfig, **values) -> np.ndarray:
  """Weighted sum of the given reward arrays (off rewards contribute nothing)."""
  out = 0.0
  for name, value in values.items():
    if name not in REWARDS:
      raise ValueError(f"unknown reward {name!r}")
    out = out + cfg.weight(name) * value
  return out
