"""`mro train`: tokenizer, data, model, the jitted step, checkpoints, metrics, export.

Running it on an existing workdir resumes from the latest intact checkpoint (train state,
RNG and data position), so the next step's loss equals the uninterrupted run's; a
damaged checkpoint is skipped with a message naming it and why. A NaN or Inf loss,
gradient norm or weight stops the run with the step named; the last good checkpoint is
kept. With several processes (`mro.hosts`), the same on each: process 0 writes the
workdir's record, every process its part of the checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from models import checkpoints
from models.config import replace as replace_model
from models.sharding import (MESH_AXES, check_batch_divides, from_process_rows, host_array,
                             make_mesh, process_rows)
from models.tokenizers import load_tokenizer, train_sentencepiece
from mro import hosts
from mro.progress import Progress
from mro.sampling.sampler_file import write_sampler_file
from mro.training import workdir as wdlib
from mro.training.checkpointing import Checkpointer, set_aside_checkpoints
from mro.training.data import BatchStream, build_sequences
from mro.training.losses import make_mdm_loss
from mro.training.settings import RunConfig
from mro.training.step import (LossFn, NonFiniteLossError, TrainState, init_state, jit_train_step,
                       make_optimizer)
from rewards.tasks import get_task
from rewards.tasks.formats import COMPACT_TAGS


def training_examples(cfg: RunConfig, split: str = "train"):
  task = get_task(cfg.data.task)
  return task.examples(split, path=cfg.data.path, limit=cfg.data.train_size or None,
                       seed=cfg.data.seed, style=cfg.data.style)


def _own_tokenizer(cfg: RunConfig, wd: wdlib.Workdir, examples):
  if wd.tokenizer.exists():
    return load_tokenizer(wd.tokenizer)
  if cfg.tokenizer.path:
    tok = load_tokenizer(cfg.tokenizer.path)
    tok.save(wd.tokenizer)
    return tok
  texts = [t for ex in examples for t in (ex.prompt, ex.target)]
  return train_sentencepiece(texts, wd.tokenizer, cfg.tokenizer.vocab_size,
                             user_symbols=COMPACT_TAGS, byte_fallback=cfg.tokenizer.byte_fallback,
                             hard_vocab_limit=False)


def prepare_tokenizer(cfg: RunConfig, wd: wdlib.Workdir, examples):
  """The run's tokenizer: the workdir's (a resumed run), else the configured one, else one
  trained on the examples; process 0 makes and records it, the others are sent its files."""
  if jax.process_count() == 1:
    return _own_tokenizer(cfg, wd, examples)
  def make() -> None:
    _own_tokenizer(cfg, wd, examples)
  hosts.on_main(make)
  return hosts.shared_directory(wd.tokenizer, load_tokenizer)


def _wandb_run(cfg: RunConfig, wd: wdlib.Workdir):
  if not cfg.train.wandb or not hosts.is_main():
    return None
  import wandb  # deferred: a slow import, needed only with train.wandb
  return wandb.init(project=cfg.train.wandb_project, dir=str(wd.root), config=cfg.to_dict(),
                    id=wd.root.resolve().name, resume="allow")


@dataclasses.dataclass
class Objective:
  """What a run optimises, on which batches, and how it is validated.

  next_batch(step, position, state, rows) -> (batch, new position, info): rows `rows`
  (this process's share, `models.sharding.process_rows`; every row with one process) of
  the global batch for `step` (1-based), given the data position (an integer that a
  checkpoint records) and the train state before the step (RL draws its rollouts with
  it). `info` is logged with the step.
  validate(step, params) -> metrics with a "score" (higher is better); every
  `validate_every` steps, and the best model so far is exported to workdir/best. Every
  process calls both at the same steps.
  """

  loss_fn: LossFn
  next_batch: Callable[[int, int, TrainState, np.ndarray], tuple[dict, int, dict]]
  validate: Callable[[int, Any], dict[str, float]] | None = None
  validate_every: int = 0


def setup(cfg: RunConfig, workdir: str | Path, examples=None):
  """(workdir, resolved config, tokenizer): checks that every process runs this config
  (as resolved: a start model that differs between hosts shows here), claims the workdir
  and records the config (process 0)."""
  hosts.agree("config", cfg.to_dict())
  wd = wdlib.Workdir(Path(workdir))
  def claim() -> None:  # a config that differs from the workdir's stops every process
    wdlib.claim(workdir, cfg)
  hosts.on_main(claim)
  tokenizer = prepare_tokenizer(cfg, wd, examples if examples is not None else
                                training_examples(cfg))
  cfg = dataclasses.replace(cfg, model=replace_model(cfg.model,
                                                     vocab_size=tokenizer.vocab_size))
  hosts.on_main(lambda: wdlib.record_config(wd, cfg))
  return wd, cfg, tokenizer


@wdlib.holding_lock
def run(cfg: RunConfig, workdir: str | Path, *, loss_fn: LossFn | None = None,
        stop_after: int | None = None) -> dict[str, Any]:
  """`mro train`: trains (or resumes) in `workdir`, holding its lock; returns the final
  metrics record.

  `loss_fn` replaces the masked-diffusion objective (later objectives plug in here);
  `stop_after` ends the run early at that step, as an interruption would (for tests).
  """
  examples = training_examples(cfg)
  wd, cfg, tokenizer = setup(cfg, workdir, examples)
  data = build_sequences(examples, tokenizer, cfg.data)
  stream = BatchStream(data, cfg.train.batch_size, cfg.data.seed)
  if loss_fn is None:
    loss_fn = make_mdm_loss(tokenizer.special.mask, cfg.data.mask_eps, cfg.data.objective,
                            resp_start=cfg.data.max_prompt_len, chunk=cfg.data.loss_chunk)
  batches = lambda step, pos, state, rows: (stream.batch(pos, rows),
                                            pos + cfg.train.batch_size, {})
  return train_loop(cfg, wd, tokenizer, Objective(loss_fn, batches), stop_after=stop_after)


def run_mesh(mesh_cfg) -> jax.sharding.Mesh:
  """The run's mesh (the config's `mesh` section); with several processes it must hold
  every device of every process, so each process feeds its share of each batch."""
  if jax.process_count() > 1 and mesh_cfg.size != jax.device_count():
    shape = " x ".join(f"{a}={n}" for a, n in zip(MESH_AXES, mesh_cfg.shape))
    raise ValueError(f"mesh {shape} has {mesh_cfg.size} devices, but the "
                     f"{jax.process_count()} processes have {jax.device_count()}: with "
                     "several processes the mesh must use every device (set mesh.data, "
                     "mesh.fsdp and mesh.tensor so that their product is "
                     f"{jax.device_count()})")
  return make_mesh(mesh_cfg)


def train_loop(cfg: RunConfig, wd: wdlib.Workdir, tokenizer,
               objective: Objective, *, init_params=None,
               stop_after: int | None = None) -> dict[str, Any]:
  """The one training loop: jitted step, checkpoints + exact resume, NaN stop, metrics,
  validation with a best-model export, and the final export. `init_params` starts from
  a trained model instead of a fresh initialisation (reject sampling, RL).

  The host never waits for a step it does not need: step n's metrics are read after step
  n + 1 is dispatched (the next batch is built while step n runs), except on steps that
  log, validate or checkpoint, whose metrics are read at once. A non-finite loss or
  gradient norm stops the run naming its step; a checkpoint is only written when the
  step's loss, gradient norm and weights are finite, so the last one is always good.

  With several processes each runs this loop on its share of every batch; process 0
  writes the metrics, the exports and the messages, all write the checkpoints together.
  """
  mesh = run_mesh(cfg.mesh)
  check_batch_divides(cfg.train.batch_size // cfg.train.grad_accum, mesh)
  optimizer = make_optimizer(cfg.train)
  apply, state, shardings = init_state(cfg.model, optimizer, cfg.train.seed, mesh,
                                       params=init_params)
  step_fn = jit_train_step(apply, objective.loss_fn, optimizer, cfg.train, shardings, mesh)
  with Checkpointer(wd.checkpoints, cfg.train.keep_checkpoints) as ckpt:  # closed on errors too
    trainer = _Trainer(cfg, wd, tokenizer, objective, ckpt, mesh)
    return hosts.broadcast(trainer.run(state, step_fn, stop_after))


@jax.jit
def _count(mask) -> jax.Array:
  return jnp.sum(mask, dtype=jnp.float32)


class _Trainer:
  """`train_loop` from the latest intact checkpoint to the end (or `stop_after`)."""

  def __init__(self, cfg: RunConfig, wd: wdlib.Workdir, tokenizer, objective: Objective,
               ckpt: Checkpointer, mesh):
    self.cfg, self.wd, self.tokenizer, self.objective = cfg, wd, tokenizer, objective
    self.ckpt, self.mesh = ckpt, mesh
    self.rows = process_rows(mesh, cfg.train.batch_size)
    self.last_read = time.perf_counter()
    self.bar = None

  def batch(self, step: int, position: int, state):
    """(global batch, position, info, tokens in it) for `step`, from this process's rows."""
    local, position, info = self.objective.next_batch(step, position, state, self.rows)
    batch = from_process_rows(local, self.mesh, self.cfg.train.batch_size)
    return batch, position, info, _count(batch["attn_mask"])

  def resume(self, state):
    """(first step to run - 1, state, data position, best validation score)."""
    restored = self.ckpt.restore_latest_intact(state, set_aside=True)
    checkpoints_dir = self.wd.checkpoints
    if restored is None and (aside := set_aside_checkpoints(checkpoints_dir)):
      names = ", ".join(p.name for p in aside[:5]) + (", ..." if len(aside) > 5 else "")
      if hosts.is_main():
        print(f"{checkpoints_dir} holds no intact checkpoint, only {len(aside)} set aside as "
              f"damaged ({names}); training starts over from step 1", file=sys.stderr,
              flush=True)
    if restored is None:
      return 0, state, 0, -math.inf
    start, state, meta = restored
    return start, state, meta["data_position"], meta.get("best_score", -math.inf)

  def read(self, entry) -> dict[str, Any]:
    """Blocks on a dispatched step's metrics; stops the run if they are not finite."""
    step_n, metrics, info, pos, tokens, t0 = entry
    metrics = {k: float(host_array(v)) for k, v in metrics.items()}
    loss, grad_norm, tokens = metrics["loss"], metrics["grad_norm"], float(host_array(tokens))
    now = time.perf_counter()
    seconds, self.last_read = now - max(t0, self.last_read), now
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
      raise NonFiniteLossError(
          f"loss {loss}, gradient norm {grad_norm} at step {step_n}; stopped. The last good "
          f"checkpoint is step {self.ckpt.latest_step()} in {self.wd.checkpoints}")
    self.bar.update(1, loss=f"{loss:.4f}", tok_s=f"{tokens / seconds:,.0f}")
    return {"step": step_n, "data_position": pos, "seconds": seconds,
            "tokens_per_s": tokens / seconds, **metrics, **info}

  def run(self, state, step_fn, stop_after: int | None) -> dict[str, Any]:
    cfg, wd = self.cfg, self.wd
    start, state, position, best = self.resume(state)
    hosts.on_main(lambda: wdlib.truncate_metrics(wd.metrics, start))
    end = cfg.train.steps if stop_after is None else min(stop_after, cfg.train.steps)
    record: dict[str, Any] = hosts.on_main(
        lambda: (wdlib.read_metrics(wd.metrics) or [{}])[-1])
    if start >= end:
      if end == cfg.train.steps and not hosts.on_main(
          lambda: (wd.model / "model.safetensors").is_file()):
        export(wd, cfg, state.params, self.tokenizer)  # stopped before its export
      return record
    pending = self.batch(start + 1, position, state)
    step_fn = step_fn.lower(state, pending[0]).compile()  # keep compile out of timing
    run_wandb = _wandb_run(cfg, wd)
    # a bar on a terminal, else plain lines; process 0's only
    self.bar = Progress("train", cfg.train.steps, unit="steps", initial=start,
                        enabled=cfg.train.progress and hosts.is_main())
    with contextlib.closing(self.bar):
      state, record = self.steps(state, step_fn, start, end, position, best, pending,
                                 run_wandb, record)
    if run_wandb is not None:
      run_wandb.finish()
    if end == cfg.train.steps:
      export(wd, cfg, state.params, self.tokenizer)
    return record

  def steps(self, state, step_fn, start: int, end: int, position: int, best: float,
            pending, run_wandb, record: dict[str, Any]):
    """Steps start + 1 .. end; (state, the last step's record)."""
    cfg, wd, objective = self.cfg, self.wd, self.objective
    unread = None  # (step, metrics, info, position, tokens, t0) of a step not read yet
    for step in range(start + 1, end + 1):
      t0 = time.perf_counter()
      batch, position, info, tokens = pending or self.batch(step, position, state)
      pending = None
      state, metrics = step_fn(state, batch)
      if unread is not None:  # the previous step (not a logged one), read while this runs
        self.read(unread)
        unread = None
      entry = (step, metrics, info, position, tokens, t0)
      validate = objective.validate and (step % objective.validate_every == 0 or
                                         step == end)
      save = step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps
      if not (validate or save or step % cfg.train.log_every == 0 or step == end or info):
        unread = entry
        continue
      record = self.read(entry)
      if validate:
        scores = objective.validate(step, state.params)
        record.update({f"val_{k}": v for k, v in scores.items()})
        if scores["score"] > best:
          best = scores["score"]
          export(wd, cfg, state.params, self.tokenizer, wd.root / "best")
      if hosts.is_main():
        _log(cfg, wd, run_wandb, record)
      if save:
        check_finite_weights(state.params, step, self.ckpt, wd)
        self.ckpt.save(step, state, {"data_position": position, "step": step,
                                     "best_score": best})
    return state, record


def _log(cfg, wd: wdlib.Workdir, run_wandb, record: dict[str, Any]) -> None:
  """Appends a step's record to metrics.jsonl (and wandb)."""
  wdlib.append_metrics(wd.metrics, record)
  if run_wandb is not None:
    run_wandb.log(record, step=record["step"])


@jax.jit
def _params_finite(params) -> jax.Array:
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]))


def check_finite_weights(params, step: int, ckpt: Checkpointer, wd: wdlib.Workdir) -> None:
  """Refuses to checkpoint non-finite weights (the previous checkpoint stays the last)."""
  if not bool(host_array(_params_finite(params))):
    raise NonFiniteLossError(
        f"non-finite weights after step {step}; stopped before checkpointing them. The "
        f"last good checkpoint is step {ckpt.latest_step()} in {wd.checkpoints}")


def export(wd: wdlib.Workdir, cfg: RunConfig, params, tokenizer,
           directory: Path | None = None) -> Path:
  """A model as a portable HF-format directory with its tokenizer (default: workdir/model).
  Every process calls it (the weights are gathered tensor by tensor); process 0 writes."""
  directory = wd.model if directory is None else directory
  checkpoints.save_hf(directory, params, cfg.model, tokenizer.special)
  if hosts.is_main():
    tokenizer.save(directory)
    write_sampler_file(directory, cfg.sampler)
  hosts.barrier("export")  # no path: a workdir may have another path on each host
  return directory
