"""How gen_length, block_length and steps divide the work of the sampler.

The response (gen_length tokens, all MASK at the start) is split into
gen_length / block_length blocks decoded left to right. The `steps` denoising steps
are shared equally between blocks (steps / num_blocks each), and inside a block the
block_length masked tokens are shared equally between its steps, the first
`block_length % steps_per_block` steps committing one extra. Example: gen_length=256,
block_length=32, steps=128 -> 8 blocks, 16 steps per block, 2 tokens per step.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

REMASKING = ("low_confidence", "random", "margin", "entropy")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """Options of the LLaDA sampler.

  threshold: if set (0 < τ <= 1), the confidence-threshold parallel mode: every step
    commits all masked tokens of the current block whose confidence (a probability, or
    the remasking score) is >= τ, and at least one; `steps` is then only an upper bound
    that is not used (a block ends when it has no MASK left).
  cfg_scale: classifier-free guidance weight (0 = off); the unconditional input is the
    sequence with the prompt replaced by MASK, as in LLaDA.
  """

  gen_length: int = 64
  steps: int = 64
  block_length: int = 32
  temperature: float = 0.0
  remasking: str = "low_confidence"
  threshold: float | None = None
  cfg_scale: float = 0.0

  def __post_init__(self):
    if self.gen_length <= 0:
      raise ValueError(f"gen_length must be positive, got {self.gen_length}")
    if self.block_length <= 0:
      raise ValueError(f"block_length must be positive, got {self.block_length}")
    if self.gen_length % self.block_length:
      raise ValueError(
          f"gen_length={self.gen_length} is not divisible by block_length={self.block_length}")
    if self.steps <= 0:
      raise ValueError(f"steps must be positive, got {self.steps}")
    if self.steps % self.num_blocks:
      raise ValueError(
          f"steps={self.steps} is not divisible by the number of blocks "
          f"(gen_length/block_length = {self.num_blocks}); each block needs the same "
          "number of steps")
    if self.steps > self.gen_length:
      raise ValueError(f"steps={self.steps} exceeds gen_length={self.gen_length}: a step "
                       "must commit at least one token")
    if not (math.isfinite(self.temperature) and self.temperature >= 0):
      raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
    if self.remasking not in REMASKING:
      raise ValueError(f"unknown remasking {self.remasking!r}; choose one of {REMASKING}")
    if self.threshold is not None and not 0.0 < self.threshold <= 1.0:  # NaN fails too
      raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
    if not (math.isfinite(self.cfg_scale) and self.cfg_scale >= 0):
      raise ValueError(f"cfg_scale must be a finite number >= 0, got {self.cfg_scale}")

  @property
  def num_blocks(self) -> int:
    return self.gen_length // self.block_length

  @property
  def steps_per_block(self) -> int:
    return self.steps // self.num_blocks

  @property
  def max_steps(self) -> int:
    """Upper bound of denoising steps (threshold mode may stop earlier per row)."""
    return self.gen_length if self.threshold is not None else self.steps


def tokens_per_step(cfg: SamplerConfig) -> np.ndarray:
  """int32[steps]: how many tokens every row commits at each step (fixed schedule)."""
  spb = cfg.steps_per_block
  base, extra = divmod(cfg.block_length, spb)
  per_block = base + (np.arange(spb) < extra).astype(np.int32)
  return np.tile(per_block, cfg.num_blocks).astype(np.int32)


def block_of_step(cfg: SamplerConfig) -> np.ndarray:
  """int32[steps]: the block each step of the fixed schedule works on."""
  return (np.arange(cfg.steps) // cfg.steps_per_block).astype(np.int32)


def with_overrides(base: SamplerConfig, **fields) -> SamplerConfig:
  """`base` with some fields replaced, keeping the rest consistent: a new gen_length
  without a block_length makes one block when the old block does not divide it, and
  without steps means one token per step (steps = gen_length)."""
  fields = {k: v for k, v in fields.items() if v is not None}
  if "gen_length" in fields:
    if "block_length" not in fields and fields["gen_length"] % base.block_length:
      fields["block_length"] = fields["gen_length"]
    fields.setdefault("steps", fields["gen_length"])
  return dataclasses.replace(base, **fields)
