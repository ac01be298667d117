"""`mro sample`: text in, text out, with the plain sampler, the MRO search, best-of-n or the
verified cascade (`mro.method.search.decode`).

`sample(model, prompts, ...)` resolves the model name (`default` + task = the shipped
model of the task), starts from the model's own recorded sampler settings (its
`sampler.json`, or its workdir's `sampler` section; else `SamplerConfig()`), applies the
given overrides, and returns one response per prompt. A search's rewards are chosen as
`mro eval` chooses them (`search_rewards`), from every reward with R_q by majority vote:
R_tv, plus R_ppl when a scorer is known (given, or the task's shipped scorer for a shipped
model), plus R_q when the task is named.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mro import options
from mro.loading import (recorded_sampler_config, resolve_model, resolve_scorer,
                         search_runner, text_sampler)
from mro.method.search.decode import Decoded, decode, search_rewards
from mro.method.search.settings import CascadeConfig, SearchConfig
from mro.sampling import schedule
from mro.sampling.schedule import SamplerConfig, with_overrides
from rewards.combine import RewardConfig
from rewards.tasks import get_task

SAMPLE_REWARDS = RewardConfig(quality_source="vote")  # every reward; R_q by majority vote


def sample(model: str, prompts: Sequence[str], *, task: str | None = None,
           sampler: Mapping[str, Any] | None = None, search: str = "none",
           search_fields: Mapping[str, Any] | None = None,
           reward_fields: Mapping[str, Any] | None = None, scorer: str | None = None,
           seed: int = 0, fast: bool = False,
           cascade_fields: Mapping[str, Any] | None = None) -> Decoded:
  """Samples one response per prompt (see the module docstring). `fast`: the recommended
  fast decoding on top of the model's own settings (explicit `sampler` fields win).
  `search`: none, mro, best-of-n or cascade (`options.decoder`, with `search_fields` and
  `cascade_fields`: SearchConfig and CascadeConfig fields); a cascade's stages replace
  fields of the model's settings."""
  if not prompts:
    raise ValueError("give at least one prompt")
  task_obj = get_task(task) if task else None
  path = resolve_model(model, task)
  base = recorded_sampler_config(path) or SamplerConfig()
  cfg = with_overrides(schedule.fast(base) if fast else base, **(sampler or {}))
  method = options.decoder(search, search_fields=search_fields, reward_fields=reward_fields,
                           cascade_fields=cascade_fields, scorer=scorer is not None)
  if isinstance(method, CascadeConfig):
    method.resolve(cfg)  # bad stages are named before the model is loaded
  rewards = scorer_path = None
  if isinstance(method, SearchConfig):
    method.resolve(cfg)
    scorer_path = resolve_scorer(scorer, task, model)
    rewards = search_rewards(SAMPLE_REWARDS, reward_fields, has_scorer=scorer_path is not None,
                             has_task=task_obj is not None)
    if rewards.on("ppl") and scorer_path is None:
      raise ValueError("the ppl reward needs --scorer (a causal model dir, or 'default' "
                       "with --task)")
  runner = search_runner(text_sampler(path), scorer_path if rewards and rewards.on("ppl")
                         else None)
  return decode(runner, prompts, cfg, method, rewards=rewards, task=task_obj, seed=seed)
