"""Hot paths compile once: every batch of an eval, every batch of a validation, every group
of a text-scored search and every group's scorer call reuse one program per shape.

Compilations are counted from JAX's own log (`jax.log_compiles`): the messages
"Compiling jit(NAME) ..." that XLA compilation starts with."""

import contextlib
import logging
import re
from collections import Counter

import numpy as np
import pytest

from mro import config as exp_config
from mro.evaluation.runner import run_eval
from mro.evaluation.settings import EvalConfig
from mro.loading import load_inference_model, resolve_model
from mro.method.search.settings import SearchConfig
from mro.method.finetuning.starting_model import validation
from mro.method.search.runner import SearchRunner
from mro.sampling.schedule import SamplerConfig
from mro.sampling.textgen import TextSampler
from rewards.combine import RewardConfig
from rewards.perplexity import TextScorer
from rewards.tasks import get_task

_COMPILING = re.compile(r"Compiling (?:jit|pjit)\(([^)]*)\)")


@contextlib.contextmanager
def compiles():
  """A Counter of the programs compiled inside the block, by jitted function name."""
  counts: Counter = Counter()

  class Handler(logging.Handler):
    def emit(self, record):
      match = _COMPILING.search(record.getMessage())
      if match:
        counts[match.group(1)] += 1

  logger = logging.getLogger("jax")
  handler, level = Handler(level=logging.DEBUG), logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.DEBUG)
  try:
    import jax
    with jax.log_compiles():
      yield counts
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture(scope="module")
def sudoku_sampler():
  model, model_cfg, _, tok = load_inference_model(resolve_model("default", "sudoku"))
  return TextSampler(model, model_cfg, tok)


@pytest.mark.integration  # the shipped models
def test_every_batch_of_an_eval_setting_runs_one_compiled_sampler(sudoku_sampler):
  cfg = EvalConfig.build("sudoku", steps="6", limit=5, batch_size=2)  # 2 + 2 + 1 (padded)
  with compiles() as counts:
    (record,) = run_eval(sudoku_sampler, cfg, progress=False)
  assert record["batches"] == 3
  assert counts["generate_compiled"] == 1


@pytest.mark.integration  # the shipped models
def test_a_validation_with_a_short_last_batch_compiles_the_sampler_once(sudoku_sampler):
  cfg = exp_config.from_dict({"data": {"task": "sudoku"},
                              "sampler": {"gen_length": 24, "steps": 6, "block_length": 24},
                              "validation": {"limit": 70}})  # a batch of 64, then 6
  validate = validation(cfg, sudoku_sampler)
  with compiles() as counts:
    validate(1, sudoku_sampler.params)
    validate(2, sudoku_sampler.params)  # and the second validation compiles nothing
  assert counts["generate_compiled"] == 1


@pytest.mark.integration  # the shipped models
def test_a_text_scored_search_compiles_one_group_step_and_one_scorer_for_all_groups(
    sudoku_sampler):
  model, _, _, _ = load_inference_model(resolve_model("default-scorer", "sudoku"))
  runner = SearchRunner(sudoku_sampler)
  runner.text_scorer = TextScorer(model, sudoku_sampler.tokenizer)  # the text path
  prompts = [e.prompt for e in get_task("sudoku").examples("test", limit=2)]
  cfg = SamplerConfig(gen_length=24, steps=8, block_length=24)
  scfg = SearchConfig(k=2, group_steps=2, temperature=1.0)
  with compiles() as counts:
    for seed in (0, 1):  # two searches of 4 groups each
      runner.search(prompts, cfg, scfg, RewardConfig(use=("ppl",)), seed=seed)
  assert counts["_group_step"] == 1
  assert counts["response_logp"] == 1
  assert np.isfinite(list(counts.values())).all()
