"""The one decoder interface (mro/method/search/decode.py): one `decode` for plain
sampling, the search, best-of-n and the cascade, one result type, and one rule for a
search's default rewards that `mro sample` and `mro eval` share. On the random tiny model
(conftest.model_dir), 8-token responses."""

import dataclasses

import numpy as np
import pytest

from mro.evaluation.runner import run_eval
from mro.evaluation.settings import EvalConfig
from mro.loading import search_runner
from mro.method.search.decode import decode, default_rewards, search_rewards
from mro.method.search.settings import CascadeConfig, SearchConfig
from mro.sample import SAMPLE_REWARDS, sample
from mro.sampling.schedule import SamplerConfig
from rewards.combine import RewardConfig
from rewards.tasks import get_task

CFG = SamplerConfig(gen_length=8, steps=4, block_length=8, temperature=1.0)
SEARCH = SearchConfig(k=2, group_steps=2)


@pytest.fixture(scope="module")
def prompts():
  return [e.prompt for e in get_task("arith").examples("test", limit=3)]


@pytest.fixture(scope="module")
def runner(text_sampler):
  return search_runner(text_sampler)  # no perplexity scorer


def test_default_rewards_leave_out_what_cannot_be_computed():
  base = RewardConfig(use=("tv", "ppl", "q"), w_q=2.0)
  assert default_rewards(base, has_scorer=True, has_task=True) == base
  assert default_rewards(base, has_scorer=False, has_task=True).use == ("tv", "q")
  assert default_rewards(base, has_scorer=False, has_task=False).use == ("tv",)
  assert default_rewards(base, has_scorer=True, has_task=False).w_q == 2.0


def test_options_apply_on_top_and_named_rewards_are_kept_to_be_refused():
  base = RewardConfig(use=("tv", "ppl"))
  kept = search_rewards(base, {"n_verify": 3}, has_scorer=False, has_task=True)
  assert kept.use == ("tv",) and kept.n_verify == 3
  named = search_rewards(base, {"use": ("tv", "ppl")}, has_scorer=False, has_task=True)
  assert named.use == ("tv", "ppl")  # asked for by name: the search refuses it, not this


def test_plain_decoding_is_the_sampler_with_its_forward_passes(runner, text_sampler, prompts):
  out = decode(runner, prompts, CFG, seed=3)
  assert out.texts == [g.text for g in text_sampler.generate(prompts, CFG, seed=3)]
  assert (out.search, out.cascade, out.rewards, out.results) == (None, None, None, ())
  assert out.nfe == CFG.steps and out.prompt_nfe == (CFG.steps,) * len(prompts)
  assert out.details() is None
  with pytest.raises(ValueError, match="rewards are for a search"):
    decode(runner, prompts, CFG, rewards=RewardConfig(use=("tv",)))


def test_best_of_n_is_the_search_that_never_selects(runner, prompts):
  rewards = RewardConfig(use=("tv",))
  best = decode(runner, prompts, CFG, dataclasses.replace(SEARCH, select="none"),
                rewards=rewards, seed=1)
  assert best.search.method == "best-of-n" and best.search.group_steps == 2
  assert best.nfe == SEARCH.pool * CFG.steps + SEARCH.pool * 2 * 1  # + R_tv rows
  details = best.details()
  assert len(details) == len(prompts) and len(details[0]["candidate_totals"]) == SEARCH.pool
  assert all(r.text in r.candidates for r in best.results)


def test_the_cascade_reports_each_prompts_passes(runner, prompts):
  cascade = CascadeConfig(stages=("steps=2", "steps=4"), accept=1e9, verify_chunks=2)
  out = decode(runner, prompts, CFG, cascade)
  assert out.cascade == cascade and out.nfe == max(out.prompt_nfe)
  assert out.prompt_nfe == (2 + 2 + 4 + 2,) * len(prompts)  # both stages, each verified
  assert [d["stages_run"] for d in out.details()] == [2] * len(prompts)


def test_sample_and_eval_choose_a_searchs_default_rewards_the_same_way(model_dir):
  """No scorer is known for this model: both drop R_ppl from their base (sample: every
  reward by vote; eval: the protocol's tv,ppl) instead of one failing, and both refuse it
  when --rewards names it."""
  sampled = sample(str(model_dir), ["1+1="], sampler=dict(gen_length=8, steps=4,
                                                          block_length=8),
                   search="mro", search_fields={"k": 2, "group_steps": 2})
  assert sampled.rewards == default_rewards(SAMPLE_REWARDS, has_scorer=False, has_task=False)
  assert sampled.rewards.use == ("tv",)
  cfg = EvalConfig.build("arith", search="mro", k=2, group_steps=2, gen_length=8, steps="4",
                         limit=2, batch_size=2, model=str(model_dir))
  (record,) = run_eval(model_dir, cfg, progress=False)
  assert tuple(record["rewards"]["use"]) == ("tv",) and record["scorer"] is None
  with pytest.raises(ValueError, match="ppl reward needs --scorer"):
    sample(str(model_dir), ["1+1="], search="mro", reward_fields={"use": "tv,ppl"})
  named = EvalConfig.build("arith", search="mro", rewards="tv,ppl", model=str(model_dir))
  with pytest.raises(ValueError, match="ppl reward needs --scorer"):
    run_eval(model_dir, named, progress=False)


def test_the_eval_sampler_is_a_typed_sampler_config():
  cfg = EvalConfig.build("sudoku", gen_length=16, threshold=0.9)
  assert isinstance(cfg.sampler, SamplerConfig)
  assert (cfg.sampler.gen_length, cfg.sampler.threshold, cfg.sampler.steps) == (16, 0.9, 16)
  assert EvalConfig("sudoku").sampler == EvalConfig.build("sudoku").sampler
  with pytest.raises(ValueError, match="sampler must be a SamplerConfig"):
    EvalConfig("sudoku", sampler={"gen_length": 16})
  assert np.all([s.gen_length == 16 for s in cfg.sampler_configs()])
