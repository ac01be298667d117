"""Test-time scaling with text in and text out: the MRO search plus the final pick.

`SearchRunner` binds a mask predictor (+ tokenizer) and an optional perplexity scorer.
The scorer runs inside the compiled search when it shares the sampler's tokenizer
(same vocabulary and special ids: `same_tokenizer`); otherwise it scores decoded text
between groups (`TextScorer`). The quality reward R_q needs a task (answer extraction,
verifier or label) and is computed on the decoded final candidates, which is also where
the final pick happens: the highest lineage intra reward + w_q * R_q per prompt.
A SearchRunner is also what `decode` (decode.py) takes: the model bound once, for every
decoder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from models.sharding import host_array
from models.tokenizers import truncate_at_eos
from models.transformer import ModelApply
from mro.sampling.schedule import SamplerConfig
from mro.method.search.mro_search import Scoring, run_search, search_nfe
from mro.method.search.settings import SearchConfig
from mro.sampling.textgen import TextSampler
from rewards.combine import RewardConfig
from rewards.perplexity import CausalLMScorer, TextScorer
from rewards.quality import quality_reward
from rewards.tasks import Example

@dataclasses.dataclass(frozen=True)
class SearchResult:
  text: str  # the picked candidate's response
  total: float  # its total reward
  candidates: list[str]  # every final candidate of the prompt
  totals: list[float]
  r_q: list[float]  # quality reward of each candidate (0 when off)
  r_tv: list[list[float]]  # per candidate, per group
  r_ppl: list[list[float]]
  tokens: list[int]  # the picked trajectory: response tokens
  commit_step: list[int]  # and the step that committed each
  candidate_tokens: np.ndarray  # int32[N, G]: every candidate's response tokens
  candidate_commit_step: np.ndarray  # int32[N, G]


def same_tokenizer(a, b) -> bool:
  if a.vocab_size != b.vocab_size or a.special != b.special:
    return False
  probe = "Sudoku 1234 <answer>12+3*4</answer> Make 24 from 1,2,3"
  return a.encode(probe) == b.encode(probe)


class SearchRunner:

  def __init__(self, sampler: TextSampler, scorer_model=None, scorer_tokenizer=None):
    self.sampler = sampler
    self.scorer = self.scorer_params = self.text_scorer = None
    if scorer_model is not None:
      if not scorer_model.cfg.causal:
        raise ValueError("the perplexity scorer must be a causal model (causal: true)")
      if scorer_tokenizer is None or same_tokenizer(sampler.tokenizer, scorer_tokenizer):
        graphdef, self.scorer_params = nnx.split(scorer_model)
        self.scorer = CausalLMScorer(ModelApply(graphdef))
      else:
        self.text_scorer = TextScorer(scorer_model, scorer_tokenizer)

  @property
  def has_scorer(self) -> bool:
    """Whether R_ppl can be computed (a perplexity scorer is bound)."""
    return self.scorer is not None or self.text_scorer is not None

  def _decode_for_scorer(self, prompt_texts, pool: int, gen_length: int):
    tok = self.sampler.tokenizer

    def decode(tokens_RL):
      P = tokens_RL.shape[1] - gen_length
      responses = [tok.decode(row[P:].tolist()) for row in tokens_RL]
      prompts = [p for p in prompt_texts for _ in range(pool)]
      return prompts, responses
    return decode

  def search(self, prompts: Sequence[str], cfg: SamplerConfig, scfg: SearchConfig,
             rewards: RewardConfig, *, task=None, examples=None, seed: int = 0,
             row_ids=None, width: int | None = None) -> tuple[list[SearchResult], dict]:
    if rewards.on("ppl") and not self.has_scorer:
      raise ValueError("the ppl reward needs a scorer (--scorer); or drop ppl from --rewards")
    if rewards.on("q") and task is None:
      raise ValueError("the quality reward q needs a task (answer extraction / verifier)")
    scfg = scfg.resolve(cfg)
    if examples is None and task is not None:  # vote / verifier need no label
      examples = unlabelled_examples(prompts)
    tok = self.sampler.tokenizer
    tokens, mask = self.sampler.encode_prompts(prompts, width)
    scoring = Scoring(rewards, tok.special.mask, tok.special.eos, self.scorer)
    out = run_search(self.sampler.apply, self.sampler.params, tokens, cfg, scfg, scoring,
                     scorer_params=self.scorer_params, key=jax.random.key(seed),
                     row_ids=row_ids, prompt_mask_BP=mask, text_scorer=self.text_scorer,
                     decode=self._decode_for_scorer(prompts, scfg.pool, cfg.gen_length),
                     mesh=self.sampler.mesh)
    out = jax.tree.map(host_array, out)
    B, N, _ = out.tokens.shape
    P = tokens.shape[1]
    texts = [[tok.decode(truncate_at_eos(out.tokens[b, n, P:].tolist(), tok.special.eos))
              for n in range(N)] for b in range(B)]
    r_q = np.zeros((B, N))
    if rewards.on("q"):
      flat_ex = [e for e in examples for _ in range(N)]
      flat_tx = [t for row in texts for t in row]
      groups = [b for b in range(B) for _ in range(N)]
      r_q = quality_reward(task, flat_ex, flat_tx, groups, rewards.quality).reshape(B, N)
    totals = np.asarray(out.intra) + rewards.total(q=r_q)
    results = []
    for b in range(B):
      best = int(np.argmax(totals[b]))
      results.append(SearchResult(
          texts[b][best], float(totals[b, best]), texts[b], totals[b].tolist(),
          r_q[b].tolist(), out.r_tv[b].tolist(), out.r_ppl[b].tolist(),
          out.tokens[b, best, P:].tolist(), out.commit_step[b, best, P:].tolist(),
          out.tokens[b, :, P:], out.commit_step[b, :, P:]))
    return results, search_nfe(cfg, scfg, rewards)


def unlabelled_examples(prompts: Sequence[str]) -> list[Example]:
  """Examples for prompts without a reference answer: R_q by vote or verifier needs only
  the prompt (the task parses numbers, grids, targets out of it)."""
  return [Example(id=f"prompt-{i}", prompt=p, target="", answer="", meta={})
          for i, p in enumerate(prompts)]
