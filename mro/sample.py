"""`mro sample`: text in, text out, with the plain sampler, the MRO search or the verified
cascade.

`sample(model, prompts, ...)` resolves the model name (`default` + task = the shipped
model of the task), starts from the model's own recorded sampler settings (its
`sampler.json`, or its workdir's `sampler` section; else `SamplerConfig()`), applies the
given overrides, and returns one response per prompt. With a search, the rewards default
to R_tv, plus R_ppl when a scorer is known (given, or the task's shipped scorer for a
shipped model), plus R_q (by majority vote) when the task is named.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from mro.loading import (load_inference_model, recorded_sampler_config, resolve_model,
                         resolve_scorer)
from mro.method.search.settings import CascadeConfig, SearchConfig
from mro.options import cascade_config, search_config
from mro.sampling import schedule
from mro.sampling.schedule import SamplerConfig, with_overrides
from mro.sampling.textgen import TextSampler
from rewards.combine import RewardConfig
from rewards.tasks import get_task


@dataclasses.dataclass(frozen=True)
class SampleResult:
  texts: list[str]
  sampler: SamplerConfig  # the settings used
  search: SearchConfig | None = None
  rewards: RewardConfig | None = None
  nfe: int = 0  # mask-predictor forward passes per prompt (search), or over the batch
  scorer_nfe: int = 0
  cascade: CascadeConfig | None = None
  prompt_nfe: tuple[int, ...] = ()  # the cascade: each prompt's own forward passes


def default_sample_rewards(has_scorer: bool, task) -> RewardConfig:
  names = ["tv"] + ["ppl"] * has_scorer + ["q"] * (task is not None)
  return RewardConfig(use=tuple(names), quality_source="vote")


def sample(model: str, prompts: Sequence[str], *, task: str | None = None,
           sampler: Mapping[str, Any] | None = None, search: str = "none",
           search_fields: Mapping[str, Any] | None = None,
           reward_fields: Mapping[str, Any] | None = None, scorer: str | None = None,
           seed: int = 0, fast: bool = False,
           cascade_fields: Mapping[str, Any] | None = None) -> SampleResult:
  """Samples one response per prompt (see the module docstring). `fast`: the recommended
  fast decoding on top of the model's own settings (explicit `sampler` fields win).
  `search="cascade"`: the verified cascade (`cascade_fields`: CascadeConfig fields), its
  stages replacing fields of the model's settings."""
  if not prompts:
    raise ValueError("give at least one prompt")
  task_obj = get_task(task) if task else None
  path = resolve_model(model, task)
  base = recorded_sampler_config(path) or SamplerConfig()
  cfg = with_overrides(schedule.fast(base) if fast else base, **(sampler or {}))
  ccfg = cascade_config(search, cascade_fields or {},
                        {*(search_fields or {}), *(reward_fields or {}),
                         *(["scorer"] if scorer else [])})
  if ccfg is not None:
    ccfg.resolve(cfg)  # bad stages are named before the model is loaded
  net, model_cfg, _, tokenizer = load_inference_model(path)
  text_sampler = TextSampler(net, model_cfg, tokenizer)
  if search == "none":
    if search_fields or reward_fields or scorer:
      raise ValueError("search and reward options need --search mro or best-of-n")
    out, prompt_len = text_sampler.generate_tokens(list(prompts), cfg, seed=seed)
    return SampleResult([g.text for g in text_sampler.decode(out, prompt_len)], cfg,
                        nfe=int(out.nfe))
  if search == "cascade":
    from mro.method.search.cascade import run_cascade
    results = run_cascade(text_sampler, list(prompts), cfg, ccfg, seed=seed)
    return SampleResult([r.text for r in results], cfg, cascade=ccfg,
                        nfe=max(r.nfe for r in results),
                        prompt_nfe=tuple(r.nfe for r in results))
  from mro.method.search.runner import SearchRunner
  scfg = search_config(search, **(search_fields or {})).resolve(cfg)
  scorer_path = resolve_scorer(scorer, task, model)
  base = default_sample_rewards(scorer_path is not None, task_obj)
  rewards = dataclasses.replace(base, **(reward_fields or {}))
  scorer_model = scorer_tok = None
  if rewards.on("ppl"):
    if scorer_path is None:
      raise ValueError("the ppl reward needs --scorer (a causal model dir, or 'default' "
                       "with --task)")
    scorer_model, _, _, scorer_tok = load_inference_model(scorer_path)
  runner = SearchRunner(text_sampler, scorer_model, scorer_tok)
  results, counts = runner.search(list(prompts), cfg, scfg, rewards, task=task_obj,
                                  seed=seed)
  return SampleResult([r.text for r in results], cfg, scfg, rewards, counts["nfe"],
                      counts["scorer_nfe"])
