"""The verified cascade: cheap decoding first, R_tv decides which answers get more compute.

MRO's token-verification reward ranks finished answers almost perfectly on the shipped
models (`mro diagnose`: AUROC 0.999 over all positions at the end), while before the end
no reward ranks much better than chance. The cascade spends the reward where it works:
decode every prompt with the cheapest stage, verify each finished answer
(`chunk_verification`, a few rows per answer), and send only the answers below the
acceptance level to the next, more careful stage. See `CascadeConfig`.

Each stage runs on the still-open rows of the batch only, padded to a power of two (so a
batch compiles a handful of shapes, not one per count). Rows keep their random streams
(row ids), so a row's result does not depend on the rest of the batch. Stage s samples
with seed + s, so two sampled stages with the same settings draw different answers.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mro.method.search.settings import CascadeConfig
from mro.sampling.sampler import response_attention
from mro.sampling.schedule import SamplerConfig
from rewards.verification import chunk_verification


@dataclasses.dataclass(frozen=True)
class CascadeResult:
  text: str
  nfe: int  # forward passes spent on this prompt: its stages' passes + verification rows
  stage: int  # the stage whose answer was kept (0 = the first)
  stages_run: int
  scores: tuple[float, ...]  # R_tv of each stage's answer, in order


@functools.partial(jax.jit, static_argnames=("apply", "chunks", "mask_id", "eos_id"))
def _verify(apply, params, tokens, prompt_mask, chunks, mask_id, eos_id):
  prompt_len = prompt_mask.shape[1]
  attn = response_attention(prompt_mask, tokens.shape[1] - prompt_len)
  return chunk_verification(apply, params, tokens, attn, prompt_len, chunks, mask_id,
                            eos_id)[0]


def bucket(n: int, cap: int) -> int:
  """The padded size of a stage's batch: the next power of two >= n, at most cap."""
  return min(cap, 1 << max(0, n - 1).bit_length())


def verify_answers(sampler, out, prompt_mask, chunks: int) -> np.ndarray:
  """R_tv (chunked, over each whole answer) of a `generate_encoded` output: float[B]."""
  tok = sampler.tokenizer.special
  return np.asarray(_verify(sampler.apply, sampler.params, jnp.asarray(out.tokens),
                            jnp.asarray(prompt_mask), chunks, tok.mask, tok.eos))


def run_cascade(sampler, prompts: Sequence[str], base: SamplerConfig, cfg: CascadeConfig, *,
                seed: int = 0, row_ids=None, width: int | None = None) -> list[CascadeResult]:
  """One `CascadeResult` per prompt; `base` is the sampler the stages modify."""
  stages = cfg.resolve(base)
  n = len(prompts)
  row_ids = np.arange(n) if row_ids is None else np.asarray(row_ids)
  best_score = np.full(n, -np.inf)
  best_text: list[str] = [""] * n
  best_stage = np.zeros(n, int)
  nfe = np.zeros(n, int)
  scores: list[list[float]] = [[] for _ in range(n)]
  open_rows = np.arange(n)
  for s, stage in enumerate(stages):
    if not len(open_rows):
      break
    size = bucket(len(open_rows), n)
    rows = np.concatenate([open_rows, np.full(size - len(open_rows), open_rows[0])])
    tokens, prompt_mask = sampler.encode_prompts([prompts[i] for i in rows], width)
    out = sampler.generate_encoded(tokens, prompt_mask, stage, seed=seed + s,
                                   row_ids=row_ids[rows])
    score = verify_answers(sampler, out, prompt_mask, cfg.verify_chunks)
    texts = [g.text for g in sampler.decode(out, tokens.shape[1])]
    passes = np.asarray(out.nfe_per_row)
    for j, i in enumerate(open_rows):
      nfe[i] += int(passes[j]) + cfg.verify_chunks
      scores[i].append(float(score[j]))
      if score[j] > best_score[i]:
        best_score[i], best_text[i], best_stage[i] = score[j], texts[j], s
    open_rows = open_rows[best_score[open_rows] < cfg.accept]
  return [CascadeResult(best_text[i], int(nfe[i]), int(best_stage[i]), len(scores[i]),
                        tuple(scores[i])) for i in range(n)]
