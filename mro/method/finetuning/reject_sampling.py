"""`mro reject-sample`: MRO reject sampling (the paper's MRO-2 / MRO-4, method.md §5).

1. Trajectories: the MRO search (the `search` section: k candidates per search point,
   groups of group_steps at its temperature; the `rewards` section, R_q usually from the
   label) runs on the task's training prompts; per prompt the highest-reward trajectory
   is kept (`reject.keep: top1`), or every final candidate whose total reward is >=
   reject.keep_threshold (`threshold`), or the highest-reward candidate among those whose
   R_q is >= reject.keep_threshold (`quality`: right answers only). Kept
   trajectories are stored compactly in workdir/trajectories.npz (written atomically and
   reused on resume). With several processes the search runs sharded over all of them
   (rows over data x fsdp of the `mesh` section) and process 0 writes the file.
2. Fine-tuning with the one train step: the step-wise loss (predict the tokens committed
   at step t from the state before t, on reject.n_opt consecutive random steps of each
   trajectory; with `reject.targets=masked` every position still masked there, with its
   final token), or with `reject.stepwise=false` the plain SFT loss on the final answers.
3. Validation on the held-out validation split every validation.every steps; the best
   model is exported to workdir/best, the last to workdir/model.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from mro import config as exp_config
from mro import hosts
from mro.files import save_npz_atomic
from mro.messages import quoted
from mro.progress import Progress
from mro.sampling.textgen import batch_rows, batches
from mro.training.data import BatchStream
from mro.method.finetuning.starting_model import begin, validation
from mro.training.loop import Objective, train_loop
from mro.training.workdir import holding_lock
from mro.method.finetuning.losses import make_stepwise_loss
from mro.training.losses import make_mdm_loss
from mro.method.search.runner import SearchRunner
from rewards.tasks import get_task

GEN_BATCH = 64


def kept_candidates(result, keep: str, threshold: float) -> list[tuple]:
  """(response tokens, commit steps, total reward) of the candidates of one searched
  prompt that the keep rule keeps (RejectConfig.keep)."""
  if keep == "top1":
    return [(np.asarray(result.tokens), np.asarray(result.commit_step), result.total)]
  candidates = range(len(result.totals))
  if keep == "quality":
    passing = [n for n in candidates if result.r_q[n] >= threshold]
    chosen = [max(passing, key=lambda n: result.totals[n])] if passing else []
  elif keep == "threshold":
    chosen = [n for n in candidates if result.totals[n] >= threshold]
  else:
    raise ValueError(f"unknown keep rule {quoted(keep)}")
  return [(result.candidate_tokens[n], result.candidate_commit_step[n], result.totals[n])
          for n in chosen]


def collect(cfg: exp_config.ExperimentConfig, runner: SearchRunner, examples) -> dict:
  """Searches every training prompt and keeps trajectories by the configured rule."""
  task = get_task(cfg.data.task)
  scfg, rewards = cfg.search.resolve(cfg.sampler), cfg.rewards
  prompts = [e.prompt for e in examples]
  width = runner.sampler.encode_prompts(prompts)[0].shape[1]
  kept: dict[str, list] = {"tokens": [], "commit_step": [], "attn_mask": [], "reward": []}
  progress = Progress("reject-sample: searching training prompts", len(prompts),
                      stream=None if hosts.is_main() else io.StringIO())  # process 0 shows it
  size = batch_rows(len(prompts), GEN_BATCH, runner.sampler.mesh)
  for idx, real in batches(len(prompts), size):  # one compile
    batch = [prompts[j] for j in idx]
    results, _ = runner.search(batch, cfg.sampler, scfg, rewards, task=task,
                               examples=[examples[j] for j in idx], seed=cfg.train.seed,
                               row_ids=idx, width=width)
    results, batch = results[:real], batch[:real]
    ptok, pmask = runner.sampler.encode_prompts(batch, width)
    for r, pt, pm in zip(results, ptok, pmask):
      chosen = kept_candidates(r, cfg.reject.keep, cfg.reject.keep_threshold)
      for tok, com, total in chosen:
        kept["tokens"].append(np.concatenate([pt, tok]))
        kept["commit_step"].append(np.concatenate([np.full(width, -1), com]))
        kept["attn_mask"].append(np.concatenate([pm.astype(bool),
                                                 np.ones(len(tok), bool)]))
        kept["reward"].append(total)
    progress.update(real)
  progress.close()
  if not kept["tokens"]:
    raise ValueError("no trajectory passed the keep rule; lower reject.keep_threshold")
  out = {k: np.asarray(v) for k, v in kept.items()}
  out["tokens"], out["commit_step"] = out["tokens"].astype(np.int32), \
      out["commit_step"].astype(np.int32)
  out["prompt_len"] = np.asarray(width)
  return out


def _trajectories(cfg: exp_config.ExperimentConfig, start, examples, path: Path) -> dict:
  """The kept trajectories: searched (by every process, sharded) and recorded by process 0,
  or read back by process 0 on resume and sent to the others."""
  def read():
    if not path.exists():
      return None
    with np.load(path) as z:
      return {k: z[k] for k in z.files}
  traj = hosts.on_main(read)
  if traj is None:
    runner = SearchRunner(start.sampler, start.scorer, start.scorer_tokenizer)
    traj = collect(cfg, runner, examples)
    hosts.on_main(lambda: save_npz_atomic(path, traj))
  return traj


@holding_lock
def run(cfg: exp_config.ExperimentConfig, workdir: str | Path, *,
        stop_after: int | None = None) -> dict[str, Any]:
  exp_config.validate(cfg, "reject-sample")
  cfg, start, examples, wd, tokenizer = begin(cfg, workdir)
  traj = _trajectories(cfg, start, examples, wd.root / "trajectories.npz")
  P = int(traj.pop("prompt_len"))
  reward = traj.pop("reward")
  mask_id = tokenizer.special.mask
  if cfg.reject.stepwise:
    traj["num_steps"] = np.full(len(reward), cfg.sampler.steps, np.int32)
    loss_fn = make_stepwise_loss(mask_id, P, cfg.reject.n_opt, cfg.reject.targets)
  else:
    traj = {"tokens": traj["tokens"], "attn_mask": traj["attn_mask"],
            "eligible": np.broadcast_to(np.arange(traj["tokens"].shape[1]) >= P,
                                        traj["tokens"].shape).copy()}
    loss_fn = make_mdm_loss(mask_id, cfg.data.mask_eps, "sft", resp_start=P)
  stream = BatchStream(traj, cfg.train.batch_size, cfg.data.seed)
  info = {"kept_trajectories": float(len(reward)), "kept_mean_reward": float(reward.mean())}
  batches = lambda step, pos, state, rows: (stream.batch(pos, rows),
                                            pos + cfg.train.batch_size,
                                            info if step == 1 else {})
  objective = Objective(loss_fn, batches, validation(cfg, start.sampler), cfg.validation.every)
  return train_loop(cfg, wd, tokenizer, objective, init_params=start.params,
                    stop_after=stop_after)
