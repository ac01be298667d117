"""How gen_length, block_length and steps divide the work of the sampler.

The response (gen_length tokens, all MASK at the start) is split into
gen_length / block_length blocks decoded left to right. The `steps` denoising steps
are shared equally between blocks (steps / num_blocks each). Inside a block, schedule
"llada" shares the block_length masked tokens equally between its steps, the first
`block_length % steps_per_block` steps committing one extra. Example: gen_length=256,
block_length=32, steps=128 -> 8 blocks, 16 steps per block, 2 tokens per step.

Schedule "dream" is Dream's `diffusion_generate`: timesteps t = linspace(1, eps,
steps_per_block + 1); step i commits int(n * (1 - t[i+1] / t[i])) of the n tokens still
masked in the block (float32 arithmetic, as the reference), and the block's last step all
that are left. Early steps may commit nothing (e.g. 24 tokens in 24 steps: 0 at the first
step, 2 at the last); such a step still runs the network. With one block this is Dream's
own sampler; with several, each block runs the schedule over its own tokens.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from mro.messages import quoted

# maskgit_plus and topk_margin are Dream's names of low_confidence (top-1 probability)
# and margin (top-1 minus top-2 probability); entropy is the same rule in both.
REMASKING = ("low_confidence", "random", "margin", "entropy", "maskgit_plus", "topk_margin")
CACHES = ("none", "prefix", "dual")
SCHEDULES = ("llada", "dream")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """Options of the sampler: LLaDA's `generate()` by default, Dream's
  `diffusion_generate` with schedule "dream" and one block (docs/families.md).

  threshold: if set (0 < τ <= 1), the confidence-threshold parallel mode: every step
    commits all masked tokens of the current block whose confidence (a probability, or
    the remasking score) is >= τ, and at least one; `steps` is then only an upper bound
    that is not used (a block ends when it has no MASK left).
  factor: if set (f > 0), Fast-dLLM's factor rule instead of a threshold: with the masked
    tokens of the block sorted by confidence c_1 >= c_2 >= ..., commit the n most
    confident where (n + 1)(1 - c_n) < f (at least one). Adaptive like `threshold`.
  fixed_steps: with `threshold` or `factor`, the rule runs within `steps` instead of
    until the block is done: each block gets its steps_per_block steps, and each step
    commits what the rule commits but at least ceil(masked left in the block / steps
    left in it), the most confident first, so every block ends on time and a batch
    costs exactly `steps` network passes. Confident tokens go early and the steps left
    are spent on the uncertain ones, a few at a time (where two answers compete, they
    are not committed together). A row that finishes a block early idles until the
    block's steps are over (its per-row passes do not count them).
  cfg_scale: classifier-free guidance weight (0 = off); the unconditional input is the
    sequence with the prompt replaced by MASK, as in LLaDA.
  cache: block KV caches (Fast-dLLM). "none": every step runs the network on the whole
    sequence (exact; parity with the reference). "prefix": at each block start one full
    pass fills every layer's K/V; the block's other steps run only the current block and
    everything after it, attending to the cached K/V of the prompt and finished blocks.
    "dual": the still-masked later blocks are read from the cache too, so a step runs
    only the block_length current positions. With a cache the rows of a batch work on
    the same block (a row that finishes its block first waits, doing nothing), so every
    row's result stays independent of the batch.
  refresh_every: with a cache, also refill it every N steps inside a block (None: only at
    block starts; 1: every step, which is exact mode through the cached code path).
  stop_at_eos: once a row commits an EOS, every still-masked position after it is
    committed as EOS in the same step, and a row with nothing left stops (no more network
    passes for it; the loop ends when every row has stopped). Needs the EOS id.
  correct_below: token correction (a remasking sampler driven by token verification,
    R_tv's leave-one-out rows): after each step commits, up to `correct_rows` of the
    tokens it committed (the least confident first) are re-predicted, each with only its
    own position re-masked; a token whose leave-one-out probability is below
    `correct_below` is re-masked (at most `correct_max` per row and step, the least
    likely first; each position at most once) and decoded again at a later step. None =
    off. Never at a block's last step of the fixed schedule, where the schedule then
    commits at least ceil(masked / steps left) per step so every block still ends
    complete. The leave-one-out rows count in the NFE (unguided, without a cache: a cache
    is refused). Trajectories with corrections are no longer described by commit steps
    alone, so reject sampling, RL and the MRO search refuse it.
  correct_rows: leave-one-out rows per row and step (None: the schedule's largest step,
    or the block length with an adaptive rule).
  correct_max: most tokens re-masked per row and step.
  schedule: how many tokens each step of the fixed schedule commits: "llada" (equal
    shares) or "dream" (Dream's timestep schedule, see the module docstring).
  schedule_eps: the last timestep of the "dream" schedule (Dream's `eps`).
  """

  gen_length: int = 64
  steps: int = 64
  block_length: int = 32
  temperature: float = 0.0
  remasking: str = "low_confidence"
  threshold: float | None = None
  cfg_scale: float = 0.0
  factor: float | None = None
  fixed_steps: bool = False
  cache: str = "none"
  refresh_every: int | None = None
  stop_at_eos: bool = False
  correct_below: float | None = None
  correct_rows: int | None = None
  correct_max: int = 1
  schedule: str = "llada"
  schedule_eps: float = 1e-3

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
      raise ValueError(f"unknown remasking {quoted(self.remasking)}; choose one of {REMASKING}")
    if self.threshold is not None and not 0.0 < self.threshold <= 1.0:  # NaN fails too
      raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
    if not (math.isfinite(self.cfg_scale) and self.cfg_scale >= 0):
      raise ValueError(f"cfg_scale must be a finite number >= 0, got {self.cfg_scale}")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"unknown schedule {quoted(self.schedule)}; choose one of {SCHEDULES}")
    if not 0.0 < self.schedule_eps < 1.0:  # NaN fails too
      raise ValueError(f"schedule_eps must be in (0, 1), got {self.schedule_eps}")
    self._check_fast_options()

  def _check_fast_options(self):
    if self.factor is not None and not self.factor > 0:
      raise ValueError(f"factor must be > 0, got {self.factor}")
    if self.factor is not None and self.threshold is not None:
      raise ValueError("factor and threshold are two parallel-commit rules; set one")
    if not isinstance(self.fixed_steps, bool):
      raise ValueError(f"fixed_steps must be true or false, got {quoted(self.fixed_steps)}")
    if self.fixed_steps and not self.adaptive:
      raise ValueError("fixed_steps bounds an adaptive rule (threshold or factor) by `steps`; "
                       "without one the schedule is already fixed: set threshold or factor, "
                       "or unset fixed_steps")
    if self.cache not in CACHES:
      raise ValueError(f"unknown cache {quoted(self.cache)}; choose one of {CACHES}")
    if self.refresh_every is not None:
      if isinstance(self.refresh_every, bool) or self.refresh_every < 1:
        raise ValueError(f"refresh_every must be a positive number of steps or None, got "
                         f"{self.refresh_every}")
      if self.cache == "none":
        raise ValueError("refresh_every refreshes a KV cache; set cache to prefix or dual")
    if not isinstance(self.stop_at_eos, bool):
      raise ValueError(f"stop_at_eos must be true or false, got {quoted(self.stop_at_eos)}")
    self._check_correction()

  def _check_correction(self):
    if self.correct_below is not None and not 0.0 < self.correct_below < 1.0:  # NaN too
      raise ValueError(f"correct_below must be a probability in (0, 1), got "
                       f"{self.correct_below}")
    for name in ("correct_rows", "correct_max"):
      value = getattr(self, name)
      if value is not None and (isinstance(value, bool) or value < 1):
        raise ValueError(f"{name} must be a positive integer, got {value}")
    if self.correcting and self.fixed_steps:
      raise ValueError("correct_below (token correction) with fixed_steps is not supported: "
                       "re-masked tokens would compete with the step budget; unset one")
    if self.correcting and self.cache != "none":
      raise ValueError(f"correct_below (token correction) needs cache=none, got cache="
                       f"{quoted(self.cache)}: its leave-one-out rows run without the block cache")

  def refuse_correction(self, what: str) -> None:
    """ValueError when token correction is on: `what` (reject sampling, RL, the search)
    describes trajectories by commit steps alone, which re-masking breaks."""
    if self.correcting:
      raise ValueError(f"{what} needs a sampler without token correction (correct_below="
                       f"{self.correct_below}): a re-masked token makes a trajectory no "
                       "longer described by its commit steps; unset correct_below")

  @property
  def correcting(self) -> bool:
    """True when token correction may re-mask committed tokens."""
    return self.correct_below is not None

  @property
  def verify_rows(self) -> int:
    """Leave-one-out rows per row and step of token correction (0 when off)."""
    if not self.correcting:
      return 0
    if self.correct_rows is not None:
      return min(self.correct_rows, self.block_length)
    return self.block_length if self.adaptive else int(tokens_per_step(self).max())

  @property
  def adaptive(self) -> bool:
    """True when the number of tokens per step adapts (threshold or factor rule)."""
    return self.threshold is not None or self.factor is not None

  @property
  def lockstep(self) -> bool:
    """True when all rows work on the same block at each step (always with a fixed
    schedule or fixed_steps; with an adaptive rule otherwise only when a cache is on)."""
    return self.step_bound or self.cache != "none"

  @property
  def step_bound(self) -> bool:
    """True when every block takes exactly its steps_per_block steps (a fixed schedule,
    or an adaptive rule with fixed_steps)."""
    return not self.adaptive or self.fixed_steps

  @property
  def num_blocks(self) -> int:
    return self.gen_length // self.block_length

  @property
  def steps_per_block(self) -> int:
    return self.steps // self.num_blocks

  @property
  def max_steps(self) -> int:
    """Upper bound of denoising steps (adaptive rules may stop earlier per row; with
    token correction each position may be committed twice)."""
    if self.step_bound:
      return self.steps
    return self.gen_length * (2 if self.correcting else 1)


def resolve_steps(item: int | str, gen_length: int) -> int:
  """An integer, or `L`/`full` (= gen_length) or `L/k` (gen_length / k, exactly)."""
  if isinstance(item, int) and not isinstance(item, bool):
    return item
  text = str(item).strip()
  if text.lstrip("-").isdigit():
    return int(text)
  head, _, div = text.partition("/")
  if head not in ("L", "full") or (div and not div.isdigit()) or div == "0":
    raise ValueError(f"steps {quoted(text)}: expected an integer, L, full or L/k (k a positive "
                     "integer)")
  k = int(div) if div else 1
  if gen_length % k:
    raise ValueError(f"steps {quoted(text)}: gen_length {gen_length} is not divisible by {k}")
  return gen_length // k


def tokens_per_step(cfg: SamplerConfig) -> np.ndarray:
  """int32[steps]: how many tokens every row commits at each step (fixed schedule)."""
  spb = cfg.steps_per_block
  if cfg.schedule == "dream":
    per_block = dream_transfers(cfg.block_length, spb, cfg.schedule_eps)
  else:
    base, extra = divmod(cfg.block_length, spb)
    per_block = base + (np.arange(spb) < extra).astype(np.int32)
  return np.tile(per_block, cfg.num_blocks).astype(np.int32)


def dream_transfers(masked: int, steps: int, eps: float) -> np.ndarray:
  """int32[steps]: Dream's tokens per step for `masked` tokens, in float32 as its
  reference computes them (torch.linspace's two-sided float32 formula, then
  int(n * (1 - s / t)) of the n still masked; the last step takes the rest)."""
  f32 = np.float32
  one, end = f32(1.0), f32(eps)
  delta = (end - one) / f32(steps)  # torch.linspace: start + i * step for the first half,
  t = [one + delta * f32(i) if i < (steps + 1) // 2  # end - (steps - i) * step after
       else end - delta * f32(steps - i) for i in range(steps + 1)]
  out, left = [], masked
  for i in range(steps):
    k = left if i == steps - 1 else int(f32(left) * (one - t[i + 1] / t[i]))
    out.append(k)
    left -= k
  return np.asarray(out, np.int32)


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


# The recommended fast decoding (`--fast`), measured by experiments/bench/fast_decoding_*
# (docs/results.md, "Fast decoding"): the confidence-threshold rule at 0.99 (steps then only bound
# the loop), no cache. It is the one setting within 2.3 points of exact decoding at L steps
# on Sudoku, Countdown and arithmetic (1.5-3.2x faster); threshold 0.9 loses 29 points on
# Sudoku, and on these short outputs (24-64 tokens) the dual cache costs accuracy for little
# time. Long outputs add `--cache dual` (12.8x at prompt 256 + gen 256).
FAST = {"cache": "none", "threshold": 0.99, "factor": None}


def fast(base: SamplerConfig) -> SamplerConfig:
  """`base`'s lengths, blocks, temperature and guidance with the FAST options."""
  return dataclasses.replace(base, **FAST)
