"""Search overhead: MRO search wall time vs k plain samplers at the same steps.

    python -m experiments.bench.search_bench [--task sudoku] [--steps 12] [--k 4] [--w 6]

Measured in one run on the shipped default model and scorer (compiled once, timed warm,
best of --repeats): the plain sampler on B prompts and on the same prompts repeated k
times (one batch of B*k rows, the shape the search runs at), and the search on the same prompts
with rewards off (expansion, selection and bookkeeping only), with tv, with ppl, and with
tv+ppl. The ratio search / (k x plain) is what the rewards and selection cost on top of
running k candidates (against both baselines: k runs of batch B, and one run of batch B*k;
on a CPU a batch k times larger is not always k times slower); the quality reward (decode +
answer check on the host) is timed separately.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from mro.sampling.schedule import SamplerConfig
from mro.method.search.mro_search import Scoring, forward_chunks, run_search
from mro.method.search.settings import SearchConfig
from mro.sampling.textgen import TextSampler
from mro.method.search.runner import SearchRunner
from mro.loading import load_inference_model, resolve_model
from rewards.combine import RewardConfig
from rewards.tasks import get_task

GEN = {"sudoku": 24, "countdown": 48, "arith": 64}


def best_time(fn, repeats: int) -> float:
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return min(times)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--task", default="sudoku", choices=sorted(GEN))
  ap.add_argument("--steps", type=int, default=12)
  ap.add_argument("--k", type=int, default=4)
  ap.add_argument("--w", type=int, default=6, help="group steps")
  ap.add_argument("--n-verify", type=int, default=1)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--forward-chunks", type=int, default=None,
                  help="run the candidates' forward passes in this many slices (default: "
                       "the search's own, k on CPU = the plain sampler's batch per pass)")
  a = ap.parse_args()
  model, mcfg, _, tok = load_inference_model(resolve_model("default", a.task))
  scorer, _, _, stok = load_inference_model(resolve_model("default-scorer", a.task))
  runner = SearchRunner(TextSampler(model, mcfg, tok), scorer, stok)
  sampler = runner.sampler
  examples = get_task(a.task).examples("test", limit=a.batch)
  prompts, mask = sampler.encode_prompts([e.prompt for e in examples])
  # The plain sampler at the candidates' temperature: k x plain is then the cost of k
  # independent samples (best-of-k without rewards), the search's natural baseline.
  cfg = SamplerConfig(gen_length=GEN[a.task], steps=a.steps, block_length=GEN[a.task],
                      temperature=1.0)
  texts = [e.prompt for e in examples]
  t_plain = best_time(lambda: sampler.generate_tokens(texts, cfg)[0].tokens, a.repeats)
  t_wide = best_time(lambda: sampler.generate_tokens(texts * a.k, cfg)[0].tokens, a.repeats)
  scfg = SearchConfig(k=a.k, group_steps=a.w, temperature=1.0, forward_chunks=a.forward_chunks)
  chunks = forward_chunks(scfg)
  print(f"{a.task}: batch {a.batch}, gen {cfg.gen_length}, steps {a.steps}, k {a.k}, w {a.w}, "
        f"n_verify {a.n_verify}, forward_chunks {chunks}; plain sampler "
        f"{t_plain:.3f}s, k x plain "
        f"{a.k * t_plain:.3f}s, plain sampler on batch {a.k * a.batch} {t_wide:.3f}s")
  ratios = lambda t: (f"{t:.3f}s = {t / (a.k * t_plain):.2f} x (k x plain), "
                      f"{t / t_wide:.2f} x (plain at batch {a.k * a.batch})")
  for use in ((), ("tv",), ("ppl",), ("tv", "ppl")):
    scoring = Scoring(RewardConfig(use=use, n_verify=a.n_verify), tok.special.mask,
                      tok.special.eos, runner.scorer)
    t = best_time(lambda: run_search(sampler.apply, sampler.params, prompts, cfg, scfg, scoring,
                                     scorer_params=runner.scorer_params, prompt_mask_BP=mask
                                     ).tokens, a.repeats)
    print(f"  search, rewards {'+'.join(use) or 'none':8s} {ratios(t)}")
  rewards = RewardConfig(use=("tv", "ppl", "q"), n_verify=a.n_verify)
  t = best_time(lambda: runner.search(texts, cfg, scfg, rewards, task=get_task(a.task),
                                      examples=examples)[0] and np.zeros(1), a.repeats)
  print(f"  search, rewards tv+ppl+q (with host decode and R_q) {ratios(t)}")


if __name__ == "__main__":
  main()
