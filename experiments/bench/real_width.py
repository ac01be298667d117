"""Real width on a CPU host: each family's real width and vocabulary with 2 layers, written
as the hub stores it, loaded back streaming, decoded, and measured against `mro plan`.

    python -m experiments.bench.real_width [--family llada dream lladamoe] [--layers 2]
        [--batches 1,4] [--prompt 64] [--gen 32] [--steps 4] [--dir runs/real_width]

Per family (the presets of models/config.py with `--layers` layers, bfloat16 weights and
compute as the released checkpoints): LLaDA-8B (d 4096, vocab 126464), Dream-7B (d 3584,
vocab 152064, 28 heads, 4 KV heads), LLaDA-MoE-7B-A1B (d 2048, 64 experts, top 8):

1. write random weights as sharded HF safetensors (5 GB shards, like the hub, capped by
   `--shard-bytes`) with `model.safetensors.index.json`, in the family's own names and
   config.json, one tensor in memory at a time;
2. plan the sampler on the same shapes (`mro plan --sample-only`, one device): XLA's peak;
3. load the directory back streaming (models.checkpoints.load_model): the host memory the
   load adds (peak RSS growth) beside the bytes of the weights;
4. for each batch: compile the sampler ahead of time and run it once (one-time costs),
   release freed memory to the OS, then run `--steps` denoising steps again, measuring
   the peak RSS growth and the time of that run; the measured peak is the weights
   (already resident) plus that growth, compared with the plan's peak (> 20% apart is a
   planner bug).

Peak RSS comes from /proc/self/status after resetting it (/proc/self/clear_refs), as in
tests/test_convert.py. Prints a markdown table (docs/families.md) and appends JSON lines.
`--shrink k` divides every width and the vocabulary by k (heads and experts kept): the
quick check of tests/test_real_width_bench.py, not a measurement.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from models.checkpoints import hf_name_map, load_model, write_hf
from models.config import ModelConfig, SpecialIds, preset
from models.transformer import ModelApply, abstract_model
from mro.plan import PlanConfig, plan
from mro.sampling.sampler import generate_compiled, row_keys
from mro.sampling.schedule import SamplerConfig

PRESETS = {"llada": "llada_8b", "dream": "dream_7b", "lladamoe": "llada_moe_7b"}
SHARD_BYTES = 5_000_000_000  # transformers' save_pretrained default
GIB = 2**30


def shapes(family: str, layers: int, shrink: int = 1) -> tuple[dict, ModelConfig]:
  """(the preset overrides, the model config) of the benchmark model."""
  base = preset(PRESETS[family])
  overrides = {"n_layers": layers,
               "dense_layers": tuple(i for i in base.dense_layers if i < layers)}
  if shrink > 1:
    for name in ("d_model", "mlp_hidden", "vocab_size", "expert_hidden"):
      overrides[name] = getattr(base, name) // shrink
  return overrides, preset(PRESETS[family], **overrides)


def _status(field: str) -> int:
  for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith(field + ":"):
      return int(line.split()[1]) * 1024
  raise RuntimeError(f"/proc/self/status has no {field}")


def _release_and_reset() -> int:
  """Returns freed heap pages to the OS, resets the peak RSS to the current RSS, and
  returns that RSS (bytes)."""
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except OSError:  # not glibc: the peak may then include freed pages
    pass
  Path("/proc/self/clear_refs").write_text("5")
  return _status("VmRSS")


def write_random_checkpoint(model_dir: Path, cfg: ModelConfig, ids: SpecialIds,
                            shard_bytes: int, seed: int = 0) -> int:
  """Random weights (norms 1, matrices N(0, 0.02^2)) in the family's HF format, made one
  tensor at a time as they are written. Returns the bytes of weights."""
  _, abstract = abstract_model(cfg)
  specs = {}
  for name, slot in hf_name_map(cfg).items():
    leaf = abstract
    for p in slot.path:
      leaf = leaf[p]
    shape = tuple(leaf.shape)[slot.expert is not None:]
    specs[name] = (shape[::-1] if slot.transpose else shape, np.dtype(ml_dtypes.bfloat16))

  def fetch(name):
    shape = specs[name][0]
    if len(shape) == 1:
      return np.ones(shape, ml_dtypes.bfloat16)
    rng = np.random.default_rng([seed, sum(map(ord, name)), len(name)])
    return (0.02 * rng.standard_normal(shape, np.float32)).astype(ml_dtypes.bfloat16)

  write_hf(model_dir, cfg, ids, specs, fetch, shard_bytes)
  return sum(int(np.prod(s)) * 2 for s, _ in specs.values())


def measure_decode(apply, params, cfg: ModelConfig, batch: int, prompt: int,
                   scfg: SamplerConfig, mask_id: int) -> dict:
  """Peak RSS growth of one sampler run (compiled beforehand) and seconds per step."""
  prompts = jax.random.randint(jax.random.key(1), (batch, prompt), 0, mask_id, jnp.int32)
  keys = row_keys(jax.random.key(0), batch)
  compiled = generate_compiled.lower(apply, params, prompts, None, keys, scfg,
                                     mask_id).compile()
  run = lambda: jax.block_until_ready(compiled(params, prompts, None, keys))
  run()  # the first run's one-time costs (thread pools, ...) are not the program's
  before = _release_and_reset()
  start = time.perf_counter()
  run()
  seconds = time.perf_counter() - start
  growth = _status("VmHWM") - before
  return {"batch": batch, "growth": growth, "s_per_step": seconds / scfg.steps}


def bench_family(family: str, args) -> dict:
  overrides, cfg = shapes(family, args.layers, args.shrink)
  ids = SpecialIds(mask=cfg.vocab_size - 1, eos=cfg.vocab_size - 2, pad=cfg.vocab_size - 3)
  scfg = SamplerConfig(gen_length=args.gen, steps=args.steps, block_length=args.gen)
  model_dir = Path(args.dir) / family
  t0 = time.perf_counter()
  weight_bytes = write_random_checkpoint(model_dir, cfg, ids, args.shard_bytes)
  write_s = time.perf_counter() - t0
  files = sorted(p.name for p in model_dir.glob("*.safetensors"))
  plans = {b: plan(PlanConfig(preset=PRESETS[family], layers=args.layers,
                              model_overrides=tuple(overrides.items()), batch=b,
                              sample_prompt=args.prompt, gen_length=args.gen,
                              block_length=args.gen, steps=args.steps, train=False))
           for b in args.batches}
  before = _release_and_reset()
  model, loaded_cfg, _ = load_model(model_dir, compute_dtype=cfg.compute_dtype)
  load_growth = _status("VmHWM") - before
  assert loaded_cfg == cfg, (loaded_cfg, cfg)
  graphdef, params = nnx.split(model)
  apply = ModelApply(graphdef)
  rows = []
  for b in args.batches:
    m = measure_decode(apply, params, cfg, b, args.prompt, scfg, ids.mask)
    planned = plans[b]["sample"]["peak"]
    measured = weight_bytes + m["growth"]
    rows.append({**m, "planned_peak": planned, "measured_peak": measured,
                 "gap": measured / planned - 1.0})
  return {"family": family, "preset": PRESETS[family], "overrides": overrides,
          "params": cfg.num_params(), "active_params": cfg.active_params(),
          "weight_bytes": weight_bytes, "files": files, "write_s": write_s,
          "load_growth": load_growth, "load_staging": load_growth - weight_bytes,
          "prompt": args.prompt, "gen": args.gen, "steps": args.steps, "decode": rows}


def table(results: list[dict]) -> str:
  lines = ["| family | weights | files | load: RSS growth (staging) | batch | plan peak | "
           "measured peak | gap | s / step |", "|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    for i, d in enumerate(r["decode"]):
      head = (f"| {r['family']} ({r['params'] / 1e9:.2f} B) | {r['weight_bytes'] / GIB:.2f} GiB"
              f" | {len(r['files'])} | {r['load_growth'] / GIB:.2f} GiB "
              f"({r['load_staging'] / GIB:+.2f}) " if i == 0 else "| | | | ")
      lines.append(f"{head}| {d['batch']} | {d['planned_peak'] / GIB:.2f} GiB | "
                   f"{d['measured_peak'] / GIB:.2f} GiB | {d['gap']:+.0%} | "
                   f"{d['s_per_step']:.2f} |")
  return "\n".join(lines)


def parse(argv=None) -> argparse.Namespace:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--family", nargs="+", default=list(PRESETS), choices=list(PRESETS))
  ap.add_argument("--layers", type=int, default=2)
  ap.add_argument("--batches", default="1,4")
  ap.add_argument("--prompt", type=int, default=64)
  ap.add_argument("--gen", type=int, default=32)
  ap.add_argument("--steps", type=int, default=4)
  ap.add_argument("--dir", default="runs/real_width")
  ap.add_argument("--shard-bytes", type=int, default=SHARD_BYTES)
  ap.add_argument("--shrink", type=int, default=1)
  ap.add_argument("--out", default=None, help="JSON lines (default: DIR/results.jsonl)")
  args = ap.parse_args(argv)
  args.batches = [int(b) for b in args.batches.split(",")]
  return args


def main(argv=None) -> list[dict]:
  args = parse(argv)
  out = Path(args.out or Path(args.dir) / "results.jsonl")
  out.parent.mkdir(parents=True, exist_ok=True)
  results = []
  for family in args.family:
    result = bench_family(family, args)
    results.append(result)
    with out.open("a") as f:
      f.write(json.dumps({**result, "args": vars(args)}, default=str) + "\n")
    print(f"{family}: " + ", ".join(f"batch {d['batch']} gap {d['gap']:+.0%}"
                                    for d in result["decode"]), flush=True)
  print(table(results))
  return results


if __name__ == "__main__":
  main()
