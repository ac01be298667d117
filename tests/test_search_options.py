"""Search options for puzzles with several answers: branching early then decoding greedily
(`branch_steps`), and R_tv over the whole answer at the final group (`final_verify`)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.config import preset
from models.transformer import ModelApply, init_model
from mro import config as exp_config
from mro.evaluation.runner import setting_key
from mro.evaluation.settings import EvalConfig
from mro.method.search.mro_search import Scoring, run_search, search_nfe
from mro.method.search.settings import SearchConfig
from mro.sampling.sampler import NOT_COMMITTED, DecodeState, run_steps
from mro.sampling.schedule import SamplerConfig
from rewards.combine import RewardConfig
from rewards.verification import content_mask

VOCAB, MASK, EOS = 32, 31, 30
CFG = SamplerConfig(gen_length=8, steps=4, block_length=8, temperature=0.0)
PROMPTS = np.random.default_rng(0).integers(0, 29, (3, 5)).astype(np.int32)
TV = RewardConfig(use=("tv",))


@pytest.fixture(scope="module")
def model():
  small = dict(vocab_size=VOCAB, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2,
               mlp_hidden=64, max_seq_len=32)
  g, p = nnx.split(init_model(preset("tiny", **small), seed=0))
  return ModelApply(g), p


def _run(model, scfg, rewards=TV, cfg=CFG):
  apply, params = model
  return jax.device_get(run_search(apply, params, PROMPTS, cfg, scfg,
                                   Scoring(rewards, MASK, EOS), key=jax.random.key(0)))


def _greedy_from(model, tokens, commit_step, step):
  """Greedy decoding of the state a trajectory had before `step`, to the end."""
  apply, params = model
  B = tokens.shape[0]
  state = DecodeState(jnp.where(commit_step < step, tokens, MASK).astype(jnp.int32),
                      jnp.where(commit_step < step, commit_step, NOT_COMMITTED),
                      jax.random.split(jax.random.key(9), B), jnp.int32(step),
                      jnp.full((B,), step, jnp.int32))
  out = run_steps(apply, params, state, None, PROMPTS.shape[1], CFG, MASK)
  return np.asarray(out.tokens), np.asarray(out.commit_step)


SAMPLED = SearchConfig(k=3, group_steps=2, select="none", temperature=1.0)


@pytest.fixture(scope="module")
def sampled(model):
  """Best-of-3 at temperature 1: every step sampled, R_tv of each group as usual."""
  return _run(model, SAMPLED)


def test_after_branch_steps_every_candidate_decodes_greedily(model, sampled):
  out = _run(model, dataclasses.replace(SAMPLED, branch_steps=1))
  tokens, steps = out.tokens.reshape(-1, 13), out.commit_step.reshape(-1, 13)
  want_tokens, want_steps = _greedy_from(model, tokens, steps, 1)
  np.testing.assert_array_equal(tokens, want_tokens)
  np.testing.assert_array_equal(steps, want_steps)
  first = lambda o: np.where(o.commit_step < 1, o.tokens, -1)
  np.testing.assert_array_equal(first(out), first(sampled))  # same draws before the branch
  assert any(len({tuple(r) for r in rows}) > 1 for rows in first(out))  # they did branch
  assert (out.tokens != sampled.tokens).any()  # and decoded otherwise after it


def test_branching_at_the_last_step_is_plain_sampling(model, sampled):
  b = _run(model, dataclasses.replace(SAMPLED, branch_steps=CFG.steps))
  np.testing.assert_array_equal(sampled.tokens, b.tokens)
  np.testing.assert_array_equal(sampled.commit_step, b.commit_step)


def _answer_logprob(model, tokens, rows):
  """Mean log-probability of the committed content tokens, each re-predicted in the row
  where its interleaved set (response index mod rows) is masked: one forward per set."""
  apply, params = model
  P, G = PROMPTS.shape[1], CFG.gen_length
  content = np.asarray(content_mask(tokens[:, P:], EOS))
  total = np.zeros(tokens.shape[0])
  for c in range(rows):
    hide = (np.arange(G) % rows == c)[None] & content
    masked = jnp.where(jnp.asarray(np.pad(hide, ((0, 0), (P, 0)))), MASK, tokens)
    logits = np.array(apply(params, masked, None,
                            jnp.broadcast_to(P + jnp.arange(G), (len(hide), G))))
    logits[..., MASK] = -np.inf
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    got = np.take_along_axis(logp, np.asarray(tokens[:, P:])[..., None], -1)[..., 0]
    total += np.where(hide, got, 0.0).sum(1)
  return total / content.sum(1)


@pytest.mark.parametrize("rows", [3, "all"])
def test_final_verify_scores_the_whole_answer_in_the_last_group_only(model, sampled, rows):
  whole = _run(model, dataclasses.replace(SAMPLED, final_verify=rows))
  np.testing.assert_array_equal(whole.tokens, sampled.tokens)  # best-of-n: same candidates
  np.testing.assert_array_equal(whole.r_tv[:, :, 0], sampled.r_tv[:, :, 0])
  assert not np.allclose(whole.r_tv[:, :, 1], sampled.r_tv[:, :, 1])
  want = _answer_logprob(model, jnp.asarray(whole.tokens.reshape(-1, 13)),
                         CFG.gen_length if rows == "all" else rows)
  np.testing.assert_allclose(whole.r_tv[:, :, -1].reshape(-1), want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(whole.intra, whole.r_tv.sum(-1), rtol=1e-5, atol=1e-6)


def test_final_verify_rows_count_in_the_forward_passes():
  scfg = SearchConfig(k=4, group_steps=2)
  base = search_nfe(CFG, scfg, TV)["nfe"]
  assert search_nfe(CFG, dataclasses.replace(scfg, final_verify=3), TV)["nfe"] == base + 4 * 3
  assert search_nfe(CFG, dataclasses.replace(scfg, final_verify="all"), TV)["nfe"] == \
      base + 4 * 8
  assert search_nfe(CFG, dataclasses.replace(scfg, final_verify=3),
                    RewardConfig(use=("q",)))["nfe"] == 4 * 4


@pytest.mark.parametrize("fields, match", [
    ({"branch_steps": 0}, "branch_steps must be >= 1"),
    ({"final_verify": 0}, "final_verify"),
    ({"final_verify": "some"}, "final_verify"),
    ({"final_verify": True}, "final_verify"),
])
def test_bad_search_options_are_refused_by_name(fields, match):
  with pytest.raises(ValueError, match=match):
    SearchConfig(**fields)


def test_search_options_that_do_not_fit_the_sampler_or_rewards_are_refused(model):
  with pytest.raises(ValueError, match="branch_steps=5 is more than the 4 steps"):
    SearchConfig(branch_steps=5).resolve(CFG)
  with pytest.raises(ValueError, match="final_verify=9 rows is more than the 8"):
    SearchConfig(final_verify=9).resolve(CFG)
  with pytest.raises(ValueError, match="turn tv on"):
    _run(model, SearchConfig(final_verify=2), rewards=RewardConfig(use=("q",)))
  with pytest.raises(ValueError, match="turn tv on"):
    EvalConfig.build(task="sudoku", search="mro", final_verify="all", rewards="ppl")
  cfg = EvalConfig.build(task="sudoku", search="best-of-n", steps="L/4", branch_steps=1,
                         final_verify="all", rewards="tv")
  assert (cfg.search.branch_steps, cfg.search.final_verify) == (1, "all")


def test_a_reject_sampling_config_with_final_verify_but_no_tv_is_refused_at_load():
  """The search of reject sampling is checked with its rewards in `validate` (so `mro
  sweep` refuses it before any run starts), not only when the search runs."""
  search = SearchConfig(final_verify=2, group_steps=2)
  sampler = SamplerConfig(gen_length=8, steps=4, block_length=8)
  cfg = exp_config.ExperimentConfig(search=search, sampler=sampler,
                                    rewards=RewardConfig(use=("q",), quality_source="label"))
  with pytest.raises(ValueError, match="turn tv on"):
    exp_config.validate(cfg, "reject-sample")
  exp_config.validate(dataclasses.replace(cfg, rewards=RewardConfig(use=("tv", "q"))),
                      "reject-sample")


def test_results_written_before_the_search_options_keep_their_resume_keys():
  search = {"method": "best-of-n", "k": 4, "group_steps": 6, "select": "none"}
  old = {"task": "sudoku", "steps": 6, "search": search}
  unset = {**old, "search": {**search, "branch_steps": None, "final_verify": None}}
  assert setting_key(unset) == setting_key(old)
  for field, value in (("branch_steps", 1), ("final_verify", "all")):
    assert setting_key({**old, "search": {**search, field: value}}) != setting_key(old)
