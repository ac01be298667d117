"""MRO-RL training throughput: rollouts, rewards and the SGRO train step, vs the matmul peak.

    python -m experiments.bench.mro_train_bench [--config mro_sudoku] [--repeats 3]

Measured in one run on the shipped default model of the config's task (warm, best of
--repeats), with the config's batch shapes (mro.prompts_per_batch x
mro.rollouts_per_prompt trajectories, sampler.steps denoising steps, groups of
mro.group_steps):

- rollouts: the compiled sampler generating the batch's trajectories (response tokens/s;
  FLOPs counted from the model shapes: the trunk over the whole sequence and the output
  layer over the block, every step);
- intra rewards: R_tv and R_ppl at every group end (seconds);
- train step: one SGRO gradient step (loss, backward, AdamW) on the rollout batch, its
  FLOPs taken from XLA's cost analysis of the compiled step (sequence tokens/s);
- the float32 matmul peak measured in the same run, and each part's fraction of it.
"""

from __future__ import annotations

import argparse
import time

import jax

from experiments.bench.sampler_bench import matmul_peak, sampler_flops
from mro import config as exp_config
from mro.method.finetuning.starting_model import load_start
from mro.method.finetuning.losses import make_sgro_loss
from mro.training.loop import training_examples
from mro.method.finetuning.rollout_batches import RolloutBatches
from mro.method.finetuning.rollouts import intra_rewards, sample_rollouts
from models.sharding import make_mesh
from mro.training.step import init_state, jit_train_step, make_optimizer


def best_time(fn, repeats: int) -> tuple[float, object]:
  out = fn()  # compile / warm up
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t)
  return min(times), out


def run(config: str, repeats: int) -> dict:
  cfg = exp_config.load_config(config)
  exp_config.validate(cfg, "rl")
  cfg, start = load_start(cfg)
  m, sc = cfg.rl, cfg.sampler
  examples = training_examples(cfg)
  tokenizer = start.sampler.tokenizer
  batches = RolloutBatches(cfg, start, examples, tokenizer)
  peak = matmul_peak()
  K, G, w = m.rollouts_per_prompt, sc.steps // m.group_steps, m.group_steps
  prompts = [e.prompt for e in batches.prompts_at(0)]
  rows = len(prompts) * K
  print(f"config={config} task={cfg.data.task} params={cfg.model.num_params() / 1e6:.2f}M "
        f"trajectories={rows} gen={sc.gen_length} steps={sc.steps} groups={G}x{w}; "
        f"matmul peak {peak / 1e9:.0f} GFLOP/s")

  def rollouts():
    return sample_rollouts(start.sampler, prompts, batches.rollout_cfg, K, seed=0,
                           width=batches.width)

  t_roll, ro = best_time(rollouts, repeats)
  seq = ro.tokens.shape[1]
  roll_flops = sampler_flops(cfg.model, rows, ro.prompt_len, sc, sc.block_length)
  t_rew, _ = best_time(
      lambda: intra_rewards(start.sampler.apply, start.params, batches.runner.scorer_params,
                            ro, G, w, batches.scoring, seed=0), repeats)

  batch, _ = batches.rollout_batch(0, start.params)
  optimizer = make_optimizer(cfg.train)
  mesh = make_mesh(cfg.mesh)
  apply, state, shardings = init_state(cfg.model, optimizer, cfg.train.seed, mesh,
                                       params=start.params)
  loss_fn = make_sgro_loss(tokenizer.special.mask, batches.width, m.clip_eps, m.kl_coef)
  compiled = jit_train_step(apply, loss_fn, optimizer, cfg.train, shardings,
                            mesh).lower(state, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  train_flops = float(cost["flops"])
  holder = [state]

  def train():
    holder[0], metrics = compiled(holder[0], batch)
    jax.block_until_ready(metrics["loss"])

  t_train, _ = best_time(train, repeats)
  out = dict(
      rollout_tok_s=rows * sc.gen_length / t_roll, rollout_seconds=t_roll,
      rollout_peak_fraction=roll_flops / t_roll / peak, reward_seconds=t_rew,
      train_tok_s=rows * seq / t_train, train_seconds=t_train,
      train_gflop_s=train_flops / t_train / 1e9, train_peak_fraction=train_flops / t_train / peak,
      peak_gflop_s=peak / 1e9)
  batch_seconds = t_roll + t_rew + m.inner_steps * t_train
  print(f"rollouts      {out['rollout_tok_s']:8.0f} response tok/s  {t_roll:6.2f} s  "
        f"{roll_flops / t_roll / 1e9:6.1f} GFLOP/s  {out['rollout_peak_fraction']:6.1%} of peak")
  print(f"intra rewards {'':8} {'':15} {t_rew:6.2f} s")
  print(f"train step    {out['train_tok_s']:8.0f} sequence tok/s  {t_train:6.2f} s  "
        f"{out['train_gflop_s']:6.1f} GFLOP/s  {out['train_peak_fraction']:6.1%} of peak")
  print(f"one rollout batch + {m.inner_steps} train steps: {batch_seconds:.2f} s "
        f"(rollouts {t_roll / batch_seconds:.0%}, rewards {t_rew / batch_seconds:.0%}, "
        f"training {m.inner_steps * t_train / batch_seconds:.0%})")
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", default="mro_sudoku")
  ap.add_argument("--repeats", type=int, default=3)
  a = ap.parse_args()
  run(a.config, a.repeats)


if __name__ == "__main__":
  main()
