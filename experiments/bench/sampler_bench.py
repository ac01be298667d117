"""Sampler benchmark: the compiled sampler vs naive Python loops, and vs the matmul peak.

    python -m experiments.bench.sampler_bench [--preset small] [--batch 8] [--gen 64]

Everything is measured in this one run (the machine is shared and noisy, so only the
ratios are meaningful across machines):
- peak: the best float32 matmul FLOP/s over a few square sizes;
- compiled: `mro.sampling.sampler.generate`, all blocks and steps in one XLA program;
- naive-same-step: the same `denoise_step`, jitted alone and dispatched once per step
  from Python with a host sync after each (what a straightforward port does);
- naive-reference: a LLaDA `generate()`-style loop: one jitted call per step computing
  logits for the whole sequence, with the schedule and top-k bookkeeping on the host.
FLOPs are counted analytically from the model shapes (the forward passes actually run).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench import random_model, sampler_shape_parser
from mro.sampling import sampler as S
from mro.sampling.schedule import SamplerConfig, tokens_per_step


def best_time(fn, repeats: int) -> float:
  fn()  # compile / warm up
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return min(times)


def matmul_peak(repeats: int = 5) -> float:
  best = 0.0
  for n in (512, 1024, 2048):
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    t = best_time(lambda: f(a).block_until_ready(), repeats)
    best = max(best, 2 * n**3 / t)
  return best


def sampler_flops(model_cfg, batch: int, prompt_len: int, cfg: SamplerConfig,
                  logits_positions: int) -> float:
  """Forward FLOPs of all steps: trunk on the whole sequence, head on `logits_positions`."""
  L = prompt_len + cfg.gen_length
  trunk = model_cfg.flops_per_token(L, logits_tokens_fraction=0.0) * L
  head = 2 * model_cfg.d_model * model_cfg.vocab_size * logits_positions
  return cfg.steps * batch * (trunk + head)


def reference_style_loop(apply, params, prompt, cfg: SamplerConfig, mask_id: int):
  """A port of LLaDA's generate(): full logits each step, bookkeeping on the host."""
  @jax.jit
  def forward(params, x):
    logits = apply(params, x, None, None)
    logits = logits.at[..., mask_id].set(-jnp.inf)
    x0 = jnp.argmax(logits, -1)
    p = jnp.take_along_axis(jax.nn.softmax(logits, -1), x0[..., None], -1)[..., 0]
    return x0, p

  B, P = prompt.shape
  x = np.concatenate([prompt, np.full((B, cfg.gen_length), mask_id, np.int32)], 1)
  per_step = tokens_per_step(cfg)
  for s in range(cfg.steps):
    x0, p = map(np.asarray, forward(params, jnp.asarray(x)))
    block_end = P + (s // cfg.steps_per_block + 1) * cfg.block_length
    conf = np.where(x == mask_id, p, -np.inf)
    conf[:, block_end:] = -np.inf
    for row in range(B):  # the reference selects top-k row by row
      top = np.argsort(-conf[row], kind="stable")[:per_step[s]]
      x[row, top] = x0[row, top]
  return x


def naive_same_step(apply, params, prompt, cfg: SamplerConfig, mask_id: int, step_fn):
  keys = S.row_keys(jax.random.key(0), prompt.shape[0])
  state = S.init_state(jnp.asarray(prompt), cfg.gen_length, keys, mask_id)
  for _ in range(cfg.steps):
    state = step_fn(params, state)
    np.asarray(state.tokens)  # the host looks at every step, as a Python loop does
  return state


def run(preset_name: str, batch: int, prompt_len: int, gen: int, block: int,
        steps_list: list[int], repeats: int) -> list[dict]:
  model_cfg, apply, params, mask_id, prompt = random_model(preset_name, batch, prompt_len)
  peak = matmul_peak()
  print(f"preset={preset_name} params={model_cfg.num_params() / 1e6:.1f}M batch={batch} "
        f"prompt={prompt_len} gen={gen} block={block}; matmul peak {peak / 1e9:.0f} GFLOP/s")
  rows = []
  for steps in steps_list:
    cfg = SamplerConfig(gen_length=gen, steps=steps, block_length=block)
    compiled = lambda: S.generate(apply, params, prompt, cfg, mask_id=mask_id,
                                  max_seq_len=model_cfg.max_seq_len).tokens.block_until_ready()
    step_fn = jax.jit(lambda p, st: S.denoise_step(apply, p, st, None, prompt_len, cfg,
                                                   mask_id))
    t_comp = best_time(compiled, repeats)
    t_same = best_time(lambda: naive_same_step(apply, params, prompt, cfg, mask_id, step_fn),
                       repeats)
    t_ref = best_time(lambda: reference_style_loop(apply, params, prompt, cfg, mask_id),
                      repeats)
    flops = sampler_flops(model_cfg, batch, prompt_len, cfg, block)
    tokens = batch * gen
    row = dict(steps=steps, compiled_tok_s=tokens / t_comp, same_step_tok_s=tokens / t_same,
               reference_tok_s=tokens / t_ref, speedup_vs_same_step=t_same / t_comp,
               speedup_vs_reference=t_ref / t_comp, peak_fraction=flops / t_comp / peak,
               gflop_s=flops / t_comp / 1e9)
    rows.append(row)
  print(f"{'steps':>5} {'compiled tok/s':>14} {'naive same-step':>15} {'ratio':>6} "
        f"{'naive reference':>15} {'ratio':>6} {'GFLOP/s':>8} {'of peak':>7}")
  for r in rows:
    print(f"{r['steps']:>5} {r['compiled_tok_s']:>14.1f} {r['same_step_tok_s']:>15.1f} "
          f"{r['speedup_vs_same_step']:>5.2f}x {r['reference_tok_s']:>15.1f} "
          f"{r['speedup_vs_reference']:>5.2f}x {r['gflop_s']:>8.1f} {r['peak_fraction']:>6.1%}")
  return rows


def main() -> None:
  a = sampler_shape_parser(__doc__.splitlines()[0], prompt_len=32, gen=64, steps="64,16",
                           repeats=3).parse_args()
  run(a.preset, a.batch, a.prompt_len, a.gen, a.block, [int(s) for s in a.steps.split(",")],
      a.repeats)


if __name__ == "__main__":
  main()
