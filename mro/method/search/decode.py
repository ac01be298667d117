"""One decoder interface: `decode` runs a batch of prompts through plain sampling, the MRO
search, best-of-n or the verified cascade and returns one `Decoded`.

The decoder is named by its settings: None (the plain sampler), a `SearchConfig` (the MRO
search; best-of-n is the search that never selects, `select="none"`, which is what
`--search best-of-n` makes) or a `CascadeConfig`. `mro sample`, `mro eval`, `mro diagnose`
and the benchmarks all decode through here, and choose a search's rewards the same way,
with `search_rewards`: the caller's base rewards (the sample command's, an eval protocol's)
with the given options, less what cannot be computed unless the options name the rewards
(R_ppl needs a scorer, R_q a task).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from mro.messages import quoted
from mro.method.search.cascade import CascadeResult, run_cascade
from mro.method.search.runner import SearchResult, SearchRunner
from mro.method.search.settings import CascadeConfig, SearchConfig
from mro.sampling.schedule import SamplerConfig
from rewards.combine import RewardConfig

Method = SearchConfig | CascadeConfig | None


def default_rewards(base: RewardConfig, *, has_scorer: bool, has_task: bool) -> RewardConfig:
  """`base` without the rewards a decode cannot compute: R_ppl without a perplexity scorer,
  R_q without a task (its answer extraction and verifier)."""
  drop = ({"ppl"} if not has_scorer else set()) | ({"q"} if not has_task else set())
  return dataclasses.replace(base, use=tuple(n for n in base.use if n not in drop))


def search_rewards(base: RewardConfig, options: Mapping[str, Any] | None = None, *,
                   has_scorer: bool, has_task: bool) -> RewardConfig:
  """The rewards of a search: `base` with `options` (RewardConfig fields) applied. Unless
  the options name the rewards (`use`), those that cannot be computed are left out
  (`default_rewards`); rewards named explicitly stay, and a search refuses them when it
  has no scorer or task."""
  options = dict(options or {})
  if "use" not in options:
    base = default_rewards(base, has_scorer=has_scorer, has_task=has_task)
  return dataclasses.replace(base, **options)


@dataclasses.dataclass(frozen=True)
class Decoded:
  """What `decode` returns: one text per prompt, the settings that made them, their cost.

  nfe: mask-predictor forward passes; the plain sampler's are batch-sized passes (its
    steps, x2 with guidance, plus token correction's), a search's are per prompt (every
    prompt costs the same), the cascade's the most any prompt took.
  prompt_nfe: each prompt's own forward passes where the decoder counts them (adaptive
    rules and caches of the plain sampler, the cascade); () otherwise.
  results: per prompt, the search's `SearchResult` (every candidate and its rewards) or
    the cascade's `CascadeResult` (its stages); () for the plain sampler.
  """

  texts: list[str]
  sampler: SamplerConfig
  search: SearchConfig | None = None  # resolved: group_steps filled in
  cascade: CascadeConfig | None = None
  rewards: RewardConfig | None = None  # the search's
  nfe: int = 0
  prompt_nfe: tuple[int, ...] = ()
  scorer_nfe: int = 0  # the perplexity scorer's forward passes per prompt (a search)
  correction_nfe: int = 0  # token correction: batch-sized passes of its rows (in nfe)
  remasked: tuple[int, ...] = ()  # token correction: tokens re-masked in each prompt
  results: tuple[SearchResult, ...] | tuple[CascadeResult, ...] = ()

  def details(self) -> list[dict[str, Any]] | None:
    """Per prompt, what a record keeps of the search (rewards of the pick and of every
    candidate) or the cascade (its stages); None for the plain sampler."""
    if self.cascade is not None:
      return [{"stage": r.stage, "stages_run": r.stages_run, "scores": list(r.scores),
               "nfe": r.nfe} for r in self.results]
    if self.search is not None:
      return [{"total_reward": r.total, "candidate_totals": r.totals,
               "candidate_r_q": r.r_q, "candidate_r_tv": r.r_tv, "candidate_r_ppl": r.r_ppl}
              for r in self.results]
    return None


def decode(runner: SearchRunner, prompts: Sequence[str], cfg: SamplerConfig,
           method: Method = None, *, rewards: RewardConfig | None = None, task=None,
           examples=None, seed: int = 0, row_ids=None, width: int | None = None) -> Decoded:
  """Decodes `prompts` with the model of `runner` (its TextSampler and perplexity scorer)
  by `method` (None: plain sampling at `cfg`; a SearchConfig: the search over `cfg`'s
  steps; a CascadeConfig: its stages, each replacing fields of `cfg`).

  rewards: a search's (default: every reward by majority vote, less what cannot be
  computed: `search_rewards`); task / examples: R_q's answer checks and labels (without
  examples, vote or verifier). Row i's random stream is keyed by row_ids[i] (default i);
  `width` pads every prompt to that many tokens (one compile for many batches).
  """
  prompts = list(prompts)
  if rewards is not None and not isinstance(method, SearchConfig):
    raise ValueError("rewards are for a search (--search mro or best-of-n)")
  if isinstance(method, CascadeConfig):
    results = run_cascade(runner.sampler, prompts, cfg, method, seed=seed, row_ids=row_ids,
                          width=width)
    return Decoded([r.text for r in results], cfg, cascade=method,
                   nfe=max(r.nfe for r in results),
                   prompt_nfe=tuple(r.nfe for r in results), results=tuple(results))
  if isinstance(method, SearchConfig):
    if rewards is None:
      rewards = search_rewards(RewardConfig(quality_source="vote"),
                               has_scorer=runner.has_scorer, has_task=task is not None)
    results, counts = runner.search(prompts, cfg, method, rewards, task=task,
                                    examples=examples, seed=seed, row_ids=row_ids,
                                    width=width)
    return Decoded([r.text for r in results], cfg, search=method.resolve(cfg),
                   rewards=rewards, nfe=counts["nfe"], scorer_nfe=counts["scorer_nfe"],
                   results=tuple(results))
  if method is not None:
    raise ValueError(f"a decoder is None, a SearchConfig or a CascadeConfig, got {quoted(method)}")
  sampler = runner.sampler
  out, prompt_len = sampler.generate_tokens(prompts, cfg, seed=seed, row_ids=row_ids,
                                            width=width)
  rows = () if out.nfe_per_row is None else tuple(int(n) for n in out.nfe_per_row)
  corrected = out.remasked is not None
  return Decoded([g.text for g in sampler.decode(out, prompt_len)], cfg, nfe=int(out.nfe),
                 prompt_nfe=rows,
                 correction_nfe=int(out.correction_nfe) if corrected else 0,
                 remasked=tuple(int(n) for n in out.remasked) if corrected else ())
