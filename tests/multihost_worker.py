"""One process of a multi-host run on this machine (tests/test_multihost.py starts two).

Each process has 4 fake CPU devices (XLA_FLAGS, set by the test); `jax.distributed`
joins them into one 8-device runtime (CPU collectives: gloo). The mesh (2, 2, 2) spans
both processes, so every weight and every batch is split across them.

  --mode run  one train step, an Orbax checkpoint, a HF export, and a sampling call with
              the fixture model loaded onto the mesh, all by both processes; process 0
              saves what it gathered to result.npz
  --mode die  train steps with a checkpoint (ckpt_die/) after each; process `--victim`
              kills itself (SIGKILL) after step 2; the survivor must stop with an error
  --mode run+die  both, in one start-up
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import numpy as np

from models.config import ModelConfig

MODEL = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2,
                    mlp_hidden=64, max_seq_len=64)
MASK_ID, EOS_ID, B, P, R = 63, 62, 8, 8, 16
MESH = (2, 2, 2)


def fixed_batch() -> dict[str, np.ndarray]:
  """A deterministic batch with its own mask (the loss below ignores the key)."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 60, (B, P + R)).astype(np.int32)
  attn = np.ones((B, P + R), bool)
  attn[::2, :3] = False
  eligible = np.zeros((B, P + R), bool)
  eligible[:, P:] = True
  mask = eligible & (rng.random((B, P + R)) < 0.5)
  mask[:, P] = True
  p_mask = np.repeat(rng.uniform(0.2, 1.0, (B, 1)), P + R, 1).astype(np.float32)
  return {"tokens": tokens, "attn_mask": attn, "eligible": eligible, "mask": mask,
          "p_mask": p_mask}


def prompts() -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(1)
  tokens = rng.integers(0, 250, (B, 6)).astype(np.int32)
  mask = np.ones_like(tokens)
  mask[1::3, :2] = 0
  return tokens, mask


def fixed_mask_loss(apply, params, batch, key):
  from mro.training.losses import sft_loss_given_mask
  del key
  loss = sft_loss_given_mask(apply, params, batch["tokens"], batch["mask"],
                             batch["p_mask"][:, 0], batch["eligible"].sum(1), MASK_ID,
                             batch["attn_mask"], resp_start=P)
  return loss, {"masked_tokens": batch["mask"].sum()}


def train_setup(mesh):
  from mro.training.settings import TrainConfig
  from mro.training.step import init_state, jit_train_step, make_optimizer
  cfg = TrainConfig(steps=10, batch_size=B, warmup_steps=1, lr=1e-2)
  optimizer = make_optimizer(cfg)
  apply, state, shardings = init_state(MODEL, optimizer, seed=0, mesh=mesh)
  return apply, state, jit_train_step(apply, fixed_mask_loss, optimizer, cfg, shardings, mesh)


def sampler_config():
  from mro.sampling.schedule import SamplerConfig
  return SamplerConfig(gen_length=32, steps=16, block_length=16)


def run(out: Path, mesh, fixture: Path):
  import jax
  from flax import nnx
  from models import checkpoints
  from models.transformer import ModelApply
  from models.config import SpecialIds
  from models.sharding import host_array, shard_batch
  from mro.training.checkpointing import Checkpointer
  from mro.sampling.sampler import generate

  apply, state, step = train_setup(mesh)
  state, metrics = step(state, shard_batch(fixed_batch(), mesh))
  with Checkpointer(out / "ckpt", keep=2) as ckpt:
    ckpt.save(1, state, {"step": 1})
  checkpoints.save_hf(out / "hf", state.params, MODEL,
                      SpecialIds(mask=MASK_ID, eos=EOS_ID, pad=EOS_ID), max_shard_bytes=20_000)
  # Sampling: the reference fixture's weights, each process reading only its own pieces
  # of the HF files (a random model's near-uniform confidences would make the commit
  # order hang on float rounding, which differs between one and several devices).
  model, cfg, ids = checkpoints.load_model(fixture, mesh=mesh)
  graphdef, params = nnx.split(model)
  tokens, mask = prompts()
  gen = generate(ModelApply(graphdef), params, tokens, sampler_config(), mask_id=ids.mask,
                 max_seq_len=cfg.max_seq_len, key=jax.random.key(3), prompt_mask_BP=mask,
                 mesh=mesh)
  result = {"loss": host_array(metrics["loss"]), "tokens": host_array(gen.tokens),
            "commit_step": host_array(gen.commit_step)}
  for path, var in nnx.to_flat_state(state.params):
    result["param/" + "/".join(map(str, path))] = host_array(var[...])
  if jax.process_index() == 0:
    np.savez(out / "result.npz", **result)
  print(f"process {jax.process_index()} done", flush=True)
  return state, step


def die(out: Path, mesh, victim: int, state=None, step=None) -> None:
  """Steps with a checkpoint after each; the victim SIGKILLs itself after step 2."""
  import jax
  from models.sharding import shard_batch
  from mro.training.checkpointing import Checkpointer

  if state is None:
    _, state, step = train_setup(mesh)
  batch = shard_batch(fixed_batch(), mesh)
  with Checkpointer(out / "ckpt_die", keep=10) as ckpt:
    for i in range(1, 11):
      state, _ = step(state, batch)
      ckpt.save(i, state, {"step": i})
      print(f"process {jax.process_index()} saved step {i}", flush=True)
      if jax.process_index() == victim and i == 2:
        os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--process-id", type=int, required=True)
  parser.add_argument("--num-processes", type=int, default=2)
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--mode", choices=("run", "die", "run+die"), default="run")
  parser.add_argument("--heartbeat", type=int, default=10)
  parser.add_argument("--victim", type=int, default=1, help="--mode die: who dies")
  parser.add_argument("--fixture", default=None, help="--mode run: the llada_tiny fixture")
  args = parser.parse_args()
  import jax
  jax.distributed.initialize(coordinator_address=f"localhost:{args.port}",
                             num_processes=args.num_processes, process_id=args.process_id,
                             initialization_timeout=60,
                             heartbeat_timeout_seconds=args.heartbeat)
  from models.sharding import MeshConfig, make_mesh
  mesh = make_mesh(MeshConfig(*MESH))
  state = step = None
  if "run" in args.mode:
    state, step = run(Path(args.out), mesh, Path(args.fixture))
  if "die" in args.mode:
    die(Path(args.out), mesh, args.victim, state, step)
  return 0


if __name__ == "__main__":
  sys.exit(main())
