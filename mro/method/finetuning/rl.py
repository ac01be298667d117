"""`mro rl`: MRO-RL, REINFORCE over SGRO groups with importance sampling (method.md §3-§5;
its batches: rollout_batches.py), or with `rl.method: diffu_grpo | coupled_grpo | wd1` a
GRPO-family objective on the same rollouts, rewards, train step and loop (grpo_batches.py,
docs/rl.md).

rl.inner_steps gradient steps of the objective run on each rollout batch (MRO-RL: the SGRO
loss, mro/method/finetuning/losses.make_sgro_loss: ratio π_θ / π_old, optional clipping,
optional KL to the frozen starting model). Checkpoints fall on rollout boundaries, so a resumed run
regenerates exactly the rollouts the uninterrupted run drew.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mro import config as exp_config
from mro.method.finetuning import grpo_batches
from mro.method.finetuning.losses import make_sgro_loss
from mro.method.finetuning.rollout_batches import RolloutBatches
from mro.method.finetuning.starting_model import begin, validation
from mro.training.loop import Objective, train_loop
from mro.training.workdir import holding_lock


@holding_lock
def run(cfg: exp_config.ExperimentConfig, workdir: str | Path, *,
        stop_after: int | None = None) -> dict[str, Any]:
  exp_config.validate(cfg, "rl")
  cfg, start, examples, wd, tokenizer = begin(cfg, workdir)
  if cfg.rl.method == "mro":
    batches = RolloutBatches(cfg, start, examples, tokenizer)
    loss_fn = make_sgro_loss(tokenizer.special.mask, batches.width, cfg.rl.clip_eps,
                             cfg.rl.kl_coef)
  else:
    batches = grpo_batches.GRPOBatches(cfg, start, examples, tokenizer)
    loss_fn = grpo_batches.make_loss(cfg, tokenizer.special.mask, batches.width)
  objective = Objective(loss_fn, batches, validation(cfg, start.sampler), cfg.validation.every)
  return train_loop(cfg, wd, tokenizer, objective, init_params=start.params,
                    stop_after=stop_after)
