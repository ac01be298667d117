"""Settings of training, one frozen dataclass per concern: `TokenizerConfig` (the
tokenizer a run uses or trains), `DataConfig` (where training sequences come from and their
layout), `TrainConfig` (steps, batch, optimizer, checkpoints, logging). The experiment
config (mro/config.py) holds them as its `tokenizer`, `data` and `train` sections;
`RunConfig` is what the training loop reads of it."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from models.config import ModelConfig
from models.sharding import MeshConfig
from mro.messages import quoted
from mro.sampling.schedule import SamplerConfig


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
  """`path`: an existing tokenizer (a model dir); else sentencepiece is trained on the
  training split with `vocab_size` pieces (the model's vocab_size follows the tokenizer)."""

  path: str | None = None
  vocab_size: int = 512
  byte_fallback: bool = False  # 256 byte pieces so any text round-trips (costs 256 ids)

  def __post_init__(self):
    if self.vocab_size < 16:
      raise ValueError(f"tokenizer.vocab_size must be >= 16, got {self.vocab_size}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where training sequences come from and how they are laid out.

  Each example becomes [left-padded prompt (max_prompt_len)] + [response, EOS padding
  (max_response_len)]. Examples that do not fit are an error unless `truncate` is set.
  """

  task: str = "arith"  # a task registered in rewards/tasks
  path: str | None = None  # data file for the task (default: the task's own source)
  style: str = "compact"  # prompt style of the task ("compact" or "protocol")
  train_size: int = 0  # examples for generated tasks (0 = the task's default)
  max_prompt_len: int = 32
  max_response_len: int = 64
  objective: str = "sft"  # "sft" (prompt never masked), "pretrain", or "ar" (causal scorer)
  train_on_padding_eos: bool = True  # LLaDA trains on the EOS padding of the response
  mask_eps: float = 1e-3
  seed: int = 0
  # > 0: the loss runs the output layer only on chunks of this many positions per row
  # that hold masked tokens (mro/training/losses.chunked_masked_ce); same loss, less memory.
  loss_chunk: int = 0

  def __post_init__(self):
    if self.objective not in ("sft", "pretrain", "ar"):
      raise ValueError(f"data.objective must be 'sft', 'pretrain' or 'ar', got "
                       f"{quoted(self.objective)}")
    for name in ("max_prompt_len", "max_response_len"):
      if getattr(self, name) <= 0:
        raise ValueError(f"data.{name} must be positive, got {getattr(self, name)}")
    if self.train_size < 0:
      raise ValueError(f"data.train_size must be >= 0, got {self.train_size}")
    if not 0.0 < self.mask_eps < 1.0:
      raise ValueError(f"data.mask_eps must be in (0, 1), got {self.mask_eps}")
    if self.loss_chunk < 0:
      raise ValueError(f"data.loss_chunk must be >= 0 (0 = off), got {self.loss_chunk}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int = 200
  batch_size: int = 32  # sequences per optimizer step (all micro-batches together)
  grad_accum: int = 1  # micro-batches per step; batch_size must divide evenly
  lr: float = 3e-4
  # linear warmup, capped at a tenth of the run (`effective_warmup`), so a short run of a
  # long config (--set train.steps=20) just works
  warmup_steps: int = 20
  min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
  weight_decay: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  grad_clip: float = 1.0
  seed: int = 0
  checkpoint_every: int = 100
  keep_checkpoints: int = 3
  log_every: int = 10
  wandb: bool = False
  wandb_project: str = "mro"
  progress: bool = True

  def __post_init__(self):
    for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints",
                 "log_every"):
      if getattr(self, name) <= 0:
        raise ValueError(f"train.{name} must be positive, got {getattr(self, name)}")
    if self.batch_size % self.grad_accum:
      raise ValueError(f"train.batch_size={self.batch_size} is not divisible by "
                       f"train.grad_accum={self.grad_accum}")
    if self.lr <= 0 or self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
      raise ValueError("train.lr must be > 0, train.warmup_steps >= 0 and "
                       "train.min_lr_ratio in [0, 1]")
    if self.grad_clip <= 0:
      raise ValueError(f"train.grad_clip must be positive, got {self.grad_clip}")
    for name in ("b1", "b2"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"train.{name} must be in [0, 1), got {getattr(self, name)}")
    if self.weight_decay < 0:
      raise ValueError(f"train.weight_decay must be >= 0, got {self.weight_decay}")

  @property
  def effective_warmup(self) -> int:
    """The warmup steps used: warmup_steps, at most a tenth of the run (at least 1), and
    fewer than the run's steps (a 1-step run has none: the cosine needs a step to decay)."""
    return min(self.warmup_steps, max(1, self.steps // 10), self.steps - 1)


class RunConfig(Protocol):
  """What training reads of an experiment config (`mro.config.ExperimentConfig` is one): the
  network, tokenizer, data, optimizer and mesh, the sampler settings recorded with the
  exported model, and the whole config as a dict for the workdir's record."""

  model: ModelConfig
  tokenizer: TokenizerConfig
  data: DataConfig
  train: TrainConfig
  sampler: SamplerConfig
  mesh: MeshConfig

  def to_dict(self) -> dict[str, Any]: ...
