"""`mro plan`: will it fit? Ahead-of-time compilation on abstract shapes, no hardware.

The training step and the sampler are lowered with abstract, sharded inputs
(`jax.ShapeDtypeStruct`s: nothing is allocated, so LLaDA-8B plans on a laptop) for the
requested mesh, compiled by XLA, and the per-device figures are read from XLA's own
analyses:

- memory (`compiled.memory_analysis()`): arguments, outputs (aliased with the donated
  train state), temporaries (activations kept for the backward pass plus scratch) and
  generated code; parameters / optimizer state / batch are split out of the arguments
  from their shapes and shardings. "Saved activations" is the output size of a separate
  forward program that returns the residuals of the backward pass (`jax.vjp`): the part
  of the temporaries that remat controls.
- FLOPs (`compiled.cost_analysis()`), per device. XLA counts a loop body once: the
  sampler's figure is one denoising step, and with gradient accumulation the train
  step's is one micro-batch (the optimizer update is then counted with it).
- Mixture-of-experts models (llada_moe_7b): parameters, optimizer state and memory count
  every expert (all are stored, and the network runs every expert on every token as one
  batched einsum: models/moe.py), so XLA's FLOPs are those of the dense dispatch. The
  model FLOPs beside them (6·N·tokens for training, `model_flops_per_step` for the
  sampler) count the active experts only (`ModelConfig.active_params`,
  `flops_per_token`): their ratio is what a sparse dispatch would save.

When this process has fewer devices than the mesh, the plan runs in a subprocess with
that many fake CPU devices (`--xla_force_host_platform_device_count`). XLA:CPU compiles
the program, so temporaries are the CPU compiler's (fusion and layout differ on TPU and
GPU; treat them as an estimate within tens of percent); parameters, optimizer state and
FLOPs do not depend on the backend.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp

from models import config as model_config
from models.sharding import (MeshConfig, activation_mesh, batch_sharding, check_batch_divides,
                             make_mesh)
from mro.training.settings import TrainConfig
from mro.sampling.cache import kv_cache_bytes
from mro.sampling.sampler import generate_compiled
from mro.sampling.schedule import SamplerConfig
from mro.training.losses import make_mdm_loss
from mro.training.step import abstract_state, jit_train_step, make_optimizer

GIB = 2**30
MAX_DEVICES = 4096  # the largest TPU pods have 8960 chips; raise with --max-devices


@dataclasses.dataclass(frozen=True)
class PlanConfig:
  """What to plan. `batch` is global (sequences per optimizer step); `prompt_len` > 0 is
  SFT (the output layer runs after the prompt), 0 pretraining (everywhere)."""

  preset: str = "llada_8b"
  layers: int = 0  # 0 = the preset's; else the preset's shapes with this many layers
  # (field, value) pairs replacing preset fields (e.g. a narrower model of a benchmark)
  model_overrides: tuple = ()
  mesh: MeshConfig = MeshConfig()
  batch: int = 0  # 0 = one sequence per data-parallel device (data x fsdp)
  seq: int = 2048
  prompt_len: int = 0
  grad_accum: int = 1
  remat: bool = True
  loss_chunk: int = 0
  sample_batch: int = 0  # 0 = batch
  sample_prompt: int = 256
  gen_length: int = 256
  block_length: int = 32
  steps: int = 0  # denoising steps (0 = gen_length)
  train: bool = True
  sample: bool = True
  max_devices: int = MAX_DEVICES  # a larger mesh is refused (fake devices cost host memory)

  def __post_init__(self):
    if self.layers < 0:
      raise ValueError(f"plan layers must be >= 0 (0 = the preset's), got {self.layers}")
    model = self.model_config()  # ValueError naming the known presets
    devices = self.mesh.data * self.mesh.fsdp * self.mesh.tensor
    if devices > self.max_devices:
      raise ValueError(f"plan mesh {self.mesh.data}x{self.mesh.fsdp}x{self.mesh.tensor} has "
                       f"{devices} devices, more than max_devices={self.max_devices} (each "
                       "fake device costs host memory and compile time; raise the bound "
                       "with --max-devices if you mean it)")
    if self.batch == 0:
      object.__setattr__(self, "batch", self.mesh.data * self.mesh.fsdp * self.grad_accum)
    for name in ("batch", "seq", "grad_accum", "sample_prompt", "gen_length", "block_length"):
      if getattr(self, name) <= 0:
        raise ValueError(f"plan {name} must be positive, got {getattr(self, name)}")
    for name in ("prompt_len", "loss_chunk", "sample_batch", "steps"):
      if getattr(self, name) < 0:
        raise ValueError(f"plan {name} must be >= 0, got {getattr(self, name)}")
    if self.prompt_len >= self.seq:
      raise ValueError(f"plan prompt_len={self.prompt_len} must be < seq={self.seq}")
    if self.batch % self.grad_accum:
      raise ValueError(f"plan batch={self.batch} is not divisible by grad_accum="
                       f"{self.grad_accum}")
    if self.train:
      check_batch_divides(self.batch // self.grad_accum, _MeshShape(self.mesh))
      if self.seq > model.max_seq_len:
        raise ValueError(f"plan seq={self.seq} exceeds {self.preset} max_seq_len="
                         f"{model.max_seq_len}")
    if self.sample:
      check_batch_divides(self.resolved_sample_batch, _MeshShape(self.mesh))
      if self.sample_prompt + self.gen_length > model.max_seq_len:
        raise ValueError(f"plan sample_prompt + gen_length exceeds {self.preset} "
                         f"max_seq_len={model.max_seq_len}")
      self.sampler_config()  # ValueError if gen/block/steps do not divide

  @property
  def resolved_sample_batch(self) -> int:
    return self.sample_batch or self.batch

  def sampler_config(self) -> SamplerConfig:
    return SamplerConfig(gen_length=self.gen_length, block_length=self.block_length,
                         steps=self.steps or self.gen_length)

  def model_config(self) -> model_config.ModelConfig:
    layers = {"n_layers": self.layers} if self.layers else {}
    base = model_config.preset(self.preset)
    if layers and base.dense_layers:  # keep the dense layers that still exist
      layers["dense_layers"] = tuple(i for i in base.dense_layers if i < self.layers)
    return model_config.preset(self.preset, remat=self.remat,
                               **{**layers, **dict(self.model_overrides)})

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> PlanConfig:
    overrides = tuple((k, tuple(v) if isinstance(v, list) else v)
                      for k, v in d.get("model_overrides", ()))
    return cls(**{**d, "mesh": MeshConfig(**d["mesh"]), "model_overrides": overrides})


class _MeshShape:
  """Just `.shape` of a mesh, for checks made before any device exists."""

  def __init__(self, cfg: MeshConfig):
    self.shape = {"data": cfg.data, "fsdp": cfg.fsdp, "tensor": cfg.tensor}


def per_device_bytes(abstract_tree) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard)."""
  total = 0
  for x in jax.tree.leaves(abstract_tree):
    shard = x.sharding.shard_shape(x.shape)
    total += math.prod(shard) * jnp.dtype(x.dtype).itemsize
  return total


def _memory(compiled) -> dict[str, int]:
  m = compiled.memory_analysis()
  return {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes,
          "aliased": m.alias_size_in_bytes, "temporaries": m.temp_size_in_bytes,
          "generated_code": m.generated_code_size_in_bytes,
          "peak": (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                   + m.temp_size_in_bytes + m.generated_code_size_in_bytes)}


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


def _saved_activations(apply, loss, mesh, params, batch, key):
  """What the backward pass keeps from the forward pass (the residuals of `jax.vjp`),
  without the parameters themselves (they are counted as parameters)."""
  with activation_mesh(mesh):
    _, backward = jax.vjp(lambda p: loss(apply, p, batch, key)[0], params)
  param_ids = {id(x) for x in jax.tree.leaves(params)}
  return [r for r in jax.tree.leaves(backward) if id(r) not in param_ids]


def plan_train(cfg: PlanConfig, mesh) -> dict[str, Any]:
  model = cfg.model_config()
  train_cfg = TrainConfig(batch_size=cfg.batch, grad_accum=cfg.grad_accum)
  optimizer = make_optimizer(train_cfg)
  apply, state, shardings = abstract_state(model, optimizer, mesh)
  sh = batch_sharding(mesh, 2)
  batch = {name: jax.ShapeDtypeStruct((cfg.batch, cfg.seq), dtype, sharding=sh)
           for name, dtype in (("tokens", jnp.int32), ("attn_mask", bool), ("eligible", bool))}
  # Any id works for compiling: the value of the MASK id does not change shapes or cost.
  loss = make_mdm_loss(model.vocab_size - 1, 1e-3, "sft" if cfg.prompt_len else "pretrain",
                       resp_start=cfg.prompt_len, chunk=cfg.loss_chunk)
  t0 = time.perf_counter()
  compiled = jit_train_step(apply, loss, optimizer, train_cfg, shardings, mesh).lower(
      state, batch).compile()
  seconds = time.perf_counter() - t0
  micro = {k: jax.ShapeDtypeStruct((cfg.batch // cfg.grad_accum, cfg.seq), v.dtype,
                                   sharding=sh) for k, v in batch.items()}
  residuals = jax.jit(functools.partial(_saved_activations, apply, loss, mesh)).lower(
      state.params, micro, state.rng).compile()
  mem = _memory(compiled)
  flops = _flops(compiled) * cfg.grad_accum
  tokens = cfg.batch * cfg.seq
  return {
      "batch": cfg.batch, "seq": cfg.seq, "prompt_len": cfg.prompt_len,
      "grad_accum": cfg.grad_accum, "remat": cfg.remat, "loss_chunk": cfg.loss_chunk,
      "parameters": per_device_bytes(state.params),
      "optimizer_state": per_device_bytes(state.opt_state),
      "batch_bytes": per_device_bytes(batch),
      "saved_activations": residuals.memory_analysis().output_size_in_bytes,
      **mem, "flops_per_device": flops, "flops_total": flops * mesh.size,
      "model_flops_6nt": 6.0 * model.active_params() * tokens, "tokens": tokens,
      "compile_seconds": seconds,
  }


def sample_cache_bytes(cfg: PlanConfig, guidance: bool = False) -> int:
  """K/V bytes per device of the sampler's block KV cache (prefix and dual alike: every
  layer's K and V over prompt + response, static shapes) at the planner's settings, from
  the formula alone (nothing compiled): rows split over data x fsdp, KV heads over tensor,
  in the model's compute dtype. Guidance (cfg_scale > 0) doubles it."""
  model = cfg.model_config()
  return kv_cache_bytes(model.n_layers, model.n_kv_heads, model.resolved_head_dim,
                        jnp.dtype(model.jnp_compute_dtype).itemsize, cfg.resolved_sample_batch,
                        cfg.sample_prompt + cfg.gen_length, guidance=guidance,
                        batch_shards=cfg.mesh.data * cfg.mesh.fsdp,
                        head_shards=cfg.mesh.tensor)


def plan_sample(cfg: PlanConfig, mesh) -> dict[str, Any]:
  model = cfg.model_config()
  apply, state, _ = abstract_state(model, make_optimizer(TrainConfig()), mesh)
  B, scfg = cfg.resolved_sample_batch, cfg.sampler_config()
  prompts = jax.ShapeDtypeStruct((B, cfg.sample_prompt), jnp.int32,
                                 sharding=batch_sharding(mesh, 2))
  keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), B))
  keys = jax.ShapeDtypeStruct(keys.shape, keys.dtype, sharding=batch_sharding(mesh, 1))
  t0 = time.perf_counter()
  compiled = generate_compiled.lower(apply, state.params, prompts, None, keys, scfg,
                             model.vocab_size - 1).compile()
  seconds = time.perf_counter() - t0
  per_step = _flops(compiled)  # the loop body, counted once by XLA
  length = cfg.sample_prompt + scfg.gen_length
  model_step = B * length * model.flops_per_token(length, scfg.block_length / length)
  return {
      "batch": B, "prompt_len": cfg.sample_prompt, "gen_length": scfg.gen_length,
      "block_length": scfg.block_length, "steps": scfg.steps,
      "parameters": per_device_bytes(state.params), **_memory(compiled),
      "flops_per_step_per_device": per_step, "flops_per_device": per_step * scfg.steps,
      "flops_total": per_step * scfg.steps * mesh.size, "compile_seconds": seconds,
      "kv_cache": sample_cache_bytes(cfg),
      "model_flops_per_step": model_step,  # active experts, the whole batch, all devices
  }


def plan_here(cfg: PlanConfig) -> dict[str, Any]:
  """The plan in this process (it must have at least mesh-size devices)."""
  mesh = make_mesh(cfg.mesh)
  model = cfg.model_config()
  report: dict[str, Any] = {
      "config": cfg.to_dict(), "devices": cfg.mesh.size, "backend": jax.default_backend(),
      "num_params": model.num_params(), "active_params": model.active_params(),
      "n_layers": model.n_layers, "param_dtype": model.param_dtype}
  if cfg.train:
    report["train"] = plan_train(cfg, mesh)
  if cfg.sample:
    report["sample"] = plan_sample(cfg, mesh)
  return report


def plan(cfg: PlanConfig, timeout: float | None = None) -> dict[str, Any]:
  """The plan, in a subprocess with mesh-size fake CPU devices when this process has
  fewer devices than the mesh."""
  if jax.device_count() >= cfg.mesh.size:
    return plan_here(cfg)
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={cfg.mesh.size}")
  cmd = [sys.executable, "-m", "mro.plan", json.dumps(cfg.to_dict())]
  try:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired as e:
    raise RuntimeError(f"planning did not finish within {timeout} s") from e
  if done.returncode != 0:
    tail = "\n".join(done.stderr.strip().splitlines()[-20:])
    raise RuntimeError(f"planning subprocess failed (exit {done.returncode}):\n{tail}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def _gib(n: float) -> str:
  return f"{n / GIB:.2f} GiB" if n >= GIB / 10 else f"{n / 2**20:.2f} MiB"


def format_report(report: dict[str, Any]) -> str:
  cfg = report["config"]
  mesh = cfg["mesh"]
  active = report.get("active_params", report["num_params"])
  sparse = (f", {active / 1e9:.2f} B active per token" if active != report["num_params"]
            else "")
  layers = f" with {cfg['layers']} layers" if cfg.get("layers") else ""
  lines = [f"{cfg['preset']}{layers}: {report['num_params'] / 1e9:.2f} B parameters{sparse} "
           f"({report['param_dtype']}), mesh data={mesh['data']} fsdp={mesh['fsdp']} "
           f"tensor={mesh['tensor']} ({report['devices']} devices, compiled by XLA:"
           f"{report['backend']})"]
  if "train" in report:
    t = report["train"]
    objective = f"SFT, prompt {t['prompt_len']}" if t["prompt_len"] else "pretraining"
    lines += [
        f"train step: batch {t['batch']} x seq {t['seq']} ({objective}), grad_accum "
        f"{t['grad_accum']}, remat {t['remat']}, loss_chunk {t['loss_chunk']}",
        "  per device:",
        f"    parameters          {_gib(t['parameters'])}",
        f"    optimizer state     {_gib(t['optimizer_state'])}",
        f"    batch               {_gib(t['batch_bytes'])}",
        f"    temporaries         {_gib(t['temporaries'])}  (XLA temp buffers: activations"
        " + scratch)",
        f"      saved activations {_gib(t['saved_activations'])}  (residuals for the "
        "backward pass, one micro-batch)",
        f"    generated code      {_gib(t['generated_code'])}",
        f"    peak (XLA)          {_gib(t['peak'])}  (arguments + temporaries + "
        "non-aliased outputs)",
        f"  FLOPs per step: {t['flops_per_device']:.3e} per device, {t['flops_total']:.3e} "
        f"total (6·N·tokens = {t['model_flops_6nt']:.3e})",
    ]
  if "sample" in report:
    s = report["sample"]
    lines += [
        f"sampler: batch {s['batch']}, prompt {s['prompt_len']} + gen {s['gen_length']} "
        f"(block {s['block_length']}, {s['steps']} steps)",
        "  per device:",
        f"    parameters          {_gib(s['parameters'])}",
        f"    temporaries         {_gib(s['temporaries'])}",
        f"    peak (XLA)          {_gib(s['peak'])}",
        f"    KV cache            {_gib(s['kv_cache'])}  (cache=prefix or dual adds this;"
        " x2 with guidance)",
        f"  FLOPs: {s['flops_per_step_per_device']:.3e} per step per device; "
        f"{s['flops_total']:.3e} per call in total (model count at the active experts: "
        f"{s['model_flops_per_step']:.3e} per step)",
    ]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  """Subprocess entry: `python -m mro.plan '<PlanConfig JSON>'` prints the report JSON."""
  parser = argparse.ArgumentParser(prog="python -m mro.plan")
  parser.add_argument("config_json")
  args = parser.parse_args(argv)
  report = plan_here(PlanConfig.from_dict(json.loads(args.config_json)))
  print(json.dumps(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
