"""Fast decoding, speed: exact vs prefix vs dual KV cache at equal steps, one run.

    python -m experiments.bench.fast_decoding_bench            # the issue's setting
    python -m experiments.bench.fast_decoding_bench --steps 64 --modes dual,none

The `small` preset with random weights, batch 8, prompt 256 + response 256, block 32,
256 steps (one token per step; 8 blocks of 32 steps), float32 on the CPU. Every mode is
compiled ahead of time (not timed), then timed on one call (best of `--repeats`), all in
this one process: on a shared machine only the ratios measured together mean something.
FLOPs are counted from the model shapes for what each mode actually computes (full passes
at the block starts; window passes over the block, or the block and everything after it
rounded up to the prefix window width, with attention over the cached keys too), and
divided by the float32 matmul peak measured in the same run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench.sampler_bench import matmul_peak
from experiments.bench import random_model, sampler_shape_parser
from mro.sampling import sampler as S
from mro.sampling.cache import prefix_windows
from mro.sampling.schedule import SamplerConfig


def mode_flops(model_cfg, batch: int, prompt_len: int, cfg: SamplerConfig) -> float:
  """Forward FLOPs of one generate call in `cfg`'s cache mode (fixed schedule)."""
  L, bl = prompt_len + cfg.gen_length, cfg.block_length
  head = 2 * model_cfg.d_model * model_cfg.vocab_size * bl
  full = model_cfg.flops_per_token(L, 0.0) * L + head
  if cfg.cache == "none":
    return cfg.steps * batch * full
  widths, bucket = prefix_windows(cfg)
  total = 0.0
  for step in range(cfg.steps):
    block, in_block = divmod(step, cfg.steps_per_block)
    refresh = in_block == 0 or (cfg.refresh_every and in_block % cfg.refresh_every == 0)
    if refresh:
      total += full
      continue
    w = bl if cfg.cache == "dual" else widths[bucket[block]]
    total += model_cfg.flops_per_token(L + w, 0.0) * w + head
  return batch * total


def run(preset_name: str, batch: int, prompt_len: int, gen: int, block: int, steps: int,
        modes: list[str], repeats: int) -> list[dict]:
  model_cfg, apply, params, mask_id, prompt = random_model(preset_name, batch, prompt_len)
  prompt = jnp.asarray(prompt)
  keys = S.row_keys(jax.random.key(0), batch)
  peak = matmul_peak()
  base = SamplerConfig(gen_length=gen, steps=steps, block_length=block)
  rows, tokens = [], {}
  for mode in modes:
    cfg = dataclasses.replace(base, cache=mode)
    t0 = time.perf_counter()
    compiled = S.generate_compiled.lower(apply, params, prompt, None, keys, cfg,
                                         mask_id).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      out = compiled(params, prompt, None, keys)
      out.tokens.block_until_ready()
      times.append(time.perf_counter() - t0)
    seconds = min(times)
    tokens[mode] = np.asarray(out.tokens)[:, prompt_len:]
    flops = mode_flops(model_cfg, batch, prompt_len, cfg)
    rows.append(dict(mode=mode, seconds=seconds, compile_seconds=compile_s,
                     tokens_per_second=batch * gen / seconds, gflop=flops / 1e9,
                     gflop_per_second=flops / seconds / 1e9, peak_fraction=flops / seconds / peak,
                     nfe=int(out.nfe)))
    print(f"  {mode}: {seconds:.1f} s (compile {compile_s:.1f} s)", flush=True)
  ref = next((r for r in rows if r["mode"] == "none"), rows[0])
  for r in rows:
    r["speedup"] = ref["seconds"] / r["seconds"]
    r["same_tokens_as_exact"] = float((tokens[r["mode"]] == tokens[ref["mode"]]).mean())
  return [dict(r, peak_gflop_per_second=peak / 1e9) for r in rows]


def table(rows: list[dict], setting: str) -> str:
  out = [f"{setting}; matmul peak {rows[0]['peak_gflop_per_second']:.0f} GFLOP/s", "",
         "| cache | seconds | tokens/s | vs exact | GFLOP | GFLOP/s | of peak | "
         "tokens equal to exact |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    out.append(f"| {r['mode']} | {r['seconds']:.1f} | {r['tokens_per_second']:.1f} | "
               f"{r['speedup']:.2f}x | {r['gflop']:.0f} | {r['gflop_per_second']:.1f} | "
               f"{r['peak_fraction']:.1%} | {r['same_tokens_as_exact']:.1%} |")
  return "\n".join(out)


def main() -> None:
  ap = sampler_shape_parser(__doc__.splitlines()[0], prompt_len=256, gen=256, steps=256,
                            repeats=1)
  ap.add_argument("--modes", default="none,prefix,dual")
  ap.add_argument("--out", default="experiments/results/fast_decoding/speed.json")
  a = ap.parse_args()
  setting = (f"preset {a.preset} (random weights), batch {a.batch}, prompt {a.prompt_len} + "
             f"gen {a.gen}, block {a.block}, {a.steps} steps, float32 on "
             f"{jax.default_backend()}")
  print(setting, flush=True)
  rows = run(a.preset, a.batch, a.prompt_len, a.gen, a.block, a.steps, a.modes.split(","),
             a.repeats)
  if a.out:
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"setting": setting, "rows": rows}, indent=1) + "\n")
  print(table(rows, setting))


if __name__ == "__main__":
  main()
