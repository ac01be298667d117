"""Text in, text out: encode prompts, left-pad them, run the compiled sampler, decode."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from models.sharding import data_parallel_size, host_array
from models.tokenizers import truncate_at_eos
from models.transformer import ModelApply
from mro.messages import quoted
from mro.sampling.sampler import GenerateOutput, generate, left_pad
from mro.sampling.schedule import SamplerConfig


@dataclasses.dataclass(frozen=True)
class Generation:
  text: str
  tokens: list[int]  # response tokens (before EOS truncation)
  commit_step: list[int]  # step at which each response position was committed


class TextSampler:
  """A model + tokenizer bound to the compiled sampler."""

  def __init__(self, model, model_cfg, tokenizer, mesh=None):
    """`mesh`: sample sharded (weights by logical axes, rows over data x fsdp)."""
    graphdef, self.params = nnx.split(model)
    self.apply = ModelApply(graphdef)
    self.model_cfg, self.tokenizer, self.mesh = model_cfg, tokenizer, mesh

  def encode_prompts(self, prompts: Sequence[str],
                     width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded tokens and mask; `width` pads every row to that many columns (fixed
    shapes: one compile for many batches), else to the longest prompt."""
    rows = [self.tokenizer.encode(p) for p in prompts]
    for p, r in zip(prompts, rows):
      if not r:
        raise ValueError(f"prompt {quoted(p)} encodes to no tokens")
    tokens, mask = left_pad(rows, self.tokenizer.special.pad)
    if width is not None:
      extra = width - tokens.shape[1]
      if extra < 0:
        raise ValueError(f"a prompt has {tokens.shape[1]} tokens, more than width={width}")
      tokens = np.pad(tokens, ((0, 0), (extra, 0)), constant_values=self.tokenizer.special.pad)
      mask = np.pad(mask, ((0, 0), (extra, 0)))
    return tokens, mask

  def generate_tokens(self, prompts: Sequence[str], cfg: SamplerConfig, seed: int = 0,
                      row_ids=None, width: int | None = None,
                      params=None) -> tuple[GenerateOutput, int]:
    """`params`: sample with these weights instead of the bound ones (a model being
    trained); the sampler never keeps them."""
    tokens, mask = self.encode_prompts(prompts, width)
    return self.generate_encoded(tokens, mask, cfg, seed, row_ids, params), tokens.shape[1]

  def generate_encoded(self, tokens, mask, cfg: SamplerConfig, seed: int = 0, row_ids=None,
                       params=None) -> GenerateOutput:
    """`generate_tokens` for prompts already encoded (`encode_prompts`' tokens and mask)."""
    params = self.params if params is None else params
    out = generate(self.apply, params, tokens, cfg, mask_id=self.tokenizer.special.mask,
                   max_seq_len=self.model_cfg.max_seq_len, key=jax.random.key(seed),
                   row_ids=row_ids, prompt_mask_BP=mask, mesh=self.mesh,
                   eos_id=self.tokenizer.special.eos)
    return jax.tree.map(host_array, out)

  def generate(self, prompts: Sequence[str], cfg: SamplerConfig, seed: int = 0,
               row_ids=None, width: int | None = None, params=None) -> list[Generation]:
    out, prompt_len = self.generate_tokens(prompts, cfg, seed, row_ids, width, params)
    return self.decode(out, prompt_len)

  def decode(self, out: GenerateOutput, prompt_len: int) -> list[Generation]:
    """One `Generation` per row of a `generate_tokens` output (text cut at the first EOS)."""
    results = []
    for toks, steps in zip(np.asarray(out.tokens), np.asarray(out.commit_step)):
      response = toks[prompt_len:].tolist()
      text = self.tokenizer.decode(truncate_at_eos(response, self.tokenizer.special.eos))
      results.append(Generation(text, response, steps[prompt_len:].tolist()))
    return results


def batch_rows(n: int, most: int, mesh=None) -> int:
  """Rows per sampler batch for `n` prompts: `most` (`n` if fewer), rounded up to a
  multiple of the mesh's data-parallel size (the padding rows of `batches` are dropped)."""
  dp = data_parallel_size(mesh)
  return -(-min(most, n) // dp) * dp


def batches(n: int, batch_size: int) -> list[tuple[np.ndarray, int]]:
  """(example indices, number of real rows) per batch; the last batch is padded to
  batch_size with copies of its first index (rows to drop), so every batch has the same
  shape and the sampler compiles once."""
  out = []
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    out.append((np.concatenate([idx, np.full(batch_size - len(idx), idx[0])]), len(idx)))
  return out
