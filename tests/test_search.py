"""MRO search: selection rules, pool bookkeeping, determinism, batch invariance."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.config import preset
from models.transformer import ModelApply, init_model
from mro.sampling.sampler import NOT_COMMITTED
from mro.sampling.schedule import SamplerConfig
from mro.method.search.mro_search import Scoring, forward_chunks, run_search, search_nfe, select
from mro.method.search.settings import SearchConfig
from rewards.combine import RewardConfig
from rewards.perplexity import CausalLMScorer

VOCAB, MASK, EOS = 32, 31, 30
CFG = SamplerConfig(gen_length=8, steps=4, block_length=8)


def test_argmax_selection_keeps_the_best_candidates():
  reward = jnp.asarray([[0.1, 0.9, 0.3, 0.2], [5.0, -1.0, 7.0, 6.0]])
  keys = jax.random.split(jax.random.key(0), 2)
  got = select(reward, keys, SearchConfig(k=2, n_live=2, select="argmax"))
  assert [sorted(r) for r in np.asarray(got).tolist()] == [[1, 2], [2, 3]]


def _draw_frequencies(temperature, n=4000):
  reward = jnp.asarray([[0.0, 1.0, 2.0, 3.0]])
  scfg = SearchConfig(k=4, n_live=n, select="resample", resample_temperature=temperature)
  idx = np.asarray(select(reward, jax.random.split(jax.random.key(7), 1), scfg))[0]
  return np.bincount(idx, minlength=4) / n


def test_resampling_with_a_huge_temperature_is_nearly_uniform():
  np.testing.assert_allclose(_draw_frequencies(1e6), 0.25, atol=0.03)


def test_resampling_with_a_tiny_temperature_is_argmax():
  assert _draw_frequencies(1e-4)[3] == 1.0


def test_resampling_follows_exp_reward_over_temperature():
  want = np.exp(np.arange(4.0)) / np.exp(np.arange(4.0)).sum()
  np.testing.assert_allclose(_draw_frequencies(1.0, n=20000), want, atol=0.015)


@pytest.fixture(scope="module")
def models():
  small = dict(vocab_size=VOCAB, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2,
               mlp_hidden=64, max_seq_len=32)
  g, p = nnx.split(init_model(preset("tiny", **small), seed=0))
  gs, ps = nnx.split(init_model(preset("tiny", causal=True, **small), seed=1))
  return ModelApply(g), p, CausalLMScorer(ModelApply(gs)), ps


def _run(models, prompts, scfg, rewards=RewardConfig(use=("tv", "ppl")), seed=0, row_ids=None,
         cfg=CFG):
  apply, params, scorer, sparams = models
  scoring = Scoring(rewards, MASK, EOS, scorer)
  return jax.device_get(run_search(apply, params, prompts, cfg, scfg, scoring,
                                   scorer_params=sparams, key=jax.random.key(seed),
                                   row_ids=row_ids))


PROMPTS = np.random.default_rng(0).integers(0, 29, (3, 5)).astype(np.int32)


@pytest.mark.parametrize("select_rule", ["argmax", "resample", "none"])
def test_every_final_candidate_is_a_complete_trajectory(models, select_rule):
  scfg = SearchConfig(k=3, n_live=2, group_steps=2, select=select_rule)
  out = _run(models, PROMPTS, scfg)
  B, N, L = out.tokens.shape
  assert (B, N, L) == (3, 6, 13)
  np.testing.assert_array_equal(out.tokens[:, :, :5], np.repeat(PROMPTS[:, None], N, 1))
  gen_steps = out.commit_step[:, :, 5:]
  assert (gen_steps != NOT_COMMITTED).all() and (out.tokens[:, :, 5:] != MASK).all()
  for b in range(B):
    for n in range(N):  # 2 tokens per step: each step commits exactly two positions
      assert np.bincount(gen_steps[b, n], minlength=4).tolist() == [2, 2, 2, 2]
  assert out.r_tv.shape == (3, 6, 2) and np.isfinite(out.intra).all()


def test_argmax_search_continues_only_the_best_candidate(models):
  """After group 1, every final candidate descends from the best group-1 candidate."""
  scfg = SearchConfig(k=4, n_live=1, group_steps=2, select="argmax")
  out = _run(models, PROMPTS, scfg)
  first_half = out.commit_step[:, :, 5:] < 2
  for b in range(PROMPTS.shape[0]):
    committed = np.where(first_half[b], out.tokens[b, :, 5:], -1)
    assert (committed == committed[0]).all()  # one shared ancestor
    assert np.allclose(out.r_tv[b, :, 0], out.r_tv[b, 0, 0])


def test_best_of_n_candidates_are_independent_samples(models):
  out = _run(models, PROMPTS, SearchConfig(k=4, group_steps=2, select="none"))
  prefixes = {tuple(np.where(out.commit_step[0, n, 5:] < 2, out.tokens[0, n, 5:], -1))
              for n in range(4)}
  assert len(prefixes) > 1


def test_same_seed_same_search_and_another_seed_differs(models):
  scfg = SearchConfig(k=3, group_steps=2, select="resample")
  a, b = _run(models, PROMPTS, scfg), _run(models, PROMPTS, scfg)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.intra, b.intra)
  c = _run(models, PROMPTS, scfg, seed=1)
  assert (a.tokens != c.tokens).any()


def test_a_prompts_search_does_not_depend_on_the_batch(models):
  scfg = SearchConfig(k=3, group_steps=2, select="resample")
  full = _run(models, PROMPTS, scfg)
  alone = _run(models, PROMPTS[1:2], scfg, row_ids=[1])
  np.testing.assert_array_equal(full.tokens[1], alone.tokens[0])
  np.testing.assert_allclose(full.intra[1], alone.intra[0], rtol=1e-5)


@pytest.mark.parametrize("chunks", [3, 6, 4, None])  # 4 does not divide 3 x 6 rows: one call
def test_running_the_candidates_in_chunks_gives_the_same_search(models, chunks):
  scfg = SearchConfig(k=3, n_live=2, group_steps=2, select="resample", forward_chunks=1)
  wide = _run(models, PROMPTS, scfg)
  sliced = _run(models, PROMPTS, dataclasses.replace(scfg, forward_chunks=chunks))
  np.testing.assert_array_equal(wide.tokens, sliced.tokens)
  np.testing.assert_array_equal(wide.commit_step, sliced.commit_step)
  np.testing.assert_allclose(wide.r_tv, sliced.r_tv, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(wide.r_ppl, sliced.r_ppl, rtol=1e-5, atol=1e-6)


def test_forward_chunks_are_left_to_the_search_where_it_runs_and_are_checked():
  unset = SearchConfig(k=3, n_live=2)
  assert unset.forward_chunks is None  # the config says the same on every backend
  assert forward_chunks(unset, "cpu") == 6 and forward_chunks(unset, "gpu") == 1
  assert forward_chunks(unset) == forward_chunks(unset, jax.default_backend())
  assert forward_chunks(SearchConfig(k=3, forward_chunks=1), "cpu") == 1
  with pytest.raises(ValueError, match="forward_chunks"):
    SearchConfig(forward_chunks=0)


def test_chunked_apply_equals_one_call_and_keeps_row_order(models):
  from mro.method.search.mro_search import ChunkedApply
  apply, params, _, _ = models
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, 30, (6, 7)), jnp.int32)
  mask = jnp.ones((6, 7), bool).at[0, :2].set(False)
  positions = jnp.tile(jnp.arange(3, 7)[None], (6, 1))
  want = apply(params, tokens, mask, positions)
  got = ChunkedApply(apply, 3)(params, tokens, mask, positions)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  got_none = ChunkedApply(apply, 2)(params, tokens)
  np.testing.assert_allclose(np.asarray(got_none), np.asarray(apply(params, tokens)),
                             rtol=1e-5, atol=1e-5)


def test_rewards_that_are_off_contribute_nothing(models):
  out = _run(models, PROMPTS, SearchConfig(k=2, group_steps=2),
             rewards=RewardConfig(use=("q",)))
  assert (out.intra == 0).all() and (out.r_tv == 0).all() and (out.r_ppl == 0).all()


def test_nfe_counts_candidates_steps_and_verification_rows():
  scfg = SearchConfig(k=4, n_live=1, group_steps=2)
  got = search_nfe(CFG, scfg, RewardConfig(use=("tv", "ppl"), n_verify=2))
  assert got == {"nfe": 4 * 4 + 4 * 2 * 2, "scorer_nfe": 4 * 2}


@pytest.mark.parametrize("steps, points, w", [(12, 2, 6), (6, 4, 1), (24, 4, 6), (7, 2, 1),
                                               (18, 4, 3), (3, 2, 1), (9, 2, 3)])
def test_search_points_give_a_group_size_that_divides_the_steps(steps, points, w):
  sampler = SamplerConfig(gen_length=24, steps=steps, block_length=24)
  assert SearchConfig(search_points=points).resolve(sampler).group_steps == w


def test_search_settings_that_cannot_work_are_refused():
  with pytest.raises(ValueError, match="group_steps"):
    SearchConfig(group_steps=3).check(CFG)
  with pytest.raises(ValueError, match="threshold"):
    SearchConfig(group_steps=2).check(dataclasses.replace(CFG, threshold=0.9))
  SearchConfig(group_steps=2).check(dataclasses.replace(CFG, threshold=0.9, fixed_steps=True))
  with pytest.raises(ValueError, match="select"):
    SearchConfig(select="best")
  with pytest.raises(ValueError, match=">= 1"):
    SearchConfig(k=0)


# --- the search on the cached sampler ------------------------------------------------------

TWO_BLOCKS = SamplerConfig(gen_length=8, steps=4, block_length=4)  # 2 steps per block


def test_a_search_with_a_cache_refreshed_every_step_equals_the_exact_search(models):
  scfg = SearchConfig(k=3, n_live=2, group_steps=1, select="resample")
  tv = RewardConfig(use=("tv",))
  exact = _run(models, PROMPTS, scfg, cfg=TWO_BLOCKS, rewards=tv)
  cached = _run(models, PROMPTS, scfg, rewards=tv,
                cfg=dataclasses.replace(TWO_BLOCKS, cache="dual", refresh_every=1))
  np.testing.assert_array_equal(cached.tokens, exact.tokens)
  np.testing.assert_array_equal(cached.commit_step, exact.commit_step)
  np.testing.assert_allclose(cached.intra, exact.intra, rtol=1e-5, atol=1e-6)


def test_a_cached_search_with_groups_ending_inside_blocks_is_complete_and_batch_invariant(
    models):
  scfg = SearchConfig(k=3, group_steps=1, select="argmax")
  cfg = dataclasses.replace(TWO_BLOCKS, cache="dual")
  out = _run(models, PROMPTS, scfg, cfg=cfg)
  gen_steps = out.commit_step[:, :, 5:]
  assert (out.tokens[:, :, 5:] != MASK).all()
  for row in gen_steps.reshape(-1, 8):
    assert np.bincount(row, minlength=4).tolist() == [2, 2, 2, 2]
  alone = _run(models, PROMPTS[1:2], scfg, row_ids=[1], cfg=cfg)
  np.testing.assert_array_equal(out.tokens[1], alone.tokens[0])
  np.testing.assert_array_equal(out.commit_step[1], alone.commit_step[0])


def test_selection_gathers_the_survivors_cache_rows_with_their_tokens():
  from mro.method.search.mro_search import _Carry, select_survivors
  from mro.sampling.cache import KVCache
  from mro.sampling.sampler import DecodeState
  B, N = 2, 3
  rows = jnp.arange(B * N)
  cache_k = jnp.broadcast_to(rows[None, None, :, None], (1, 1, B * N, 4)).astype(jnp.float32)
  state = DecodeState(jnp.tile(rows[:, None], (1, 4)), jnp.zeros((B * N, 4), jnp.int32),
                      jax.random.split(jax.random.key(0), B * N), jnp.int32(2),
                      jnp.full((B * N,), 2), KVCache(cache_k, -cache_k, jnp.int32(0),
                                                     jnp.int32(1)))
  tv = jnp.asarray([[0.0], [5.0], [1.0], [3.0], [0.0], [-1.0]])  # best: rows 1 and 3
  carry = select_survivors(_Carry(state, tv, jnp.zeros_like(tv)), 1,
                           jax.random.split(jax.random.key(1), B),
                           SearchConfig(k=N, n_live=1, select="argmax"),
                           RewardConfig(use=("tv",)))
  want = np.repeat([1, 3], N)
  np.testing.assert_array_equal(np.asarray(carry.state.tokens)[:, 0], want)
  np.testing.assert_array_equal(np.asarray(carry.state.cache.k)[0, 0, :, 0], want)
  np.testing.assert_array_equal(np.asarray(carry.state.cache.v)[0, 0, :, 0], -want)


def test_n_verify_all_re_predicts_every_position_the_group_committed(models):
  """"all" = the group's positions (2 steps x 2 tokens = 4): the same R_tv as 4, and as 8
  (which can only find the same 4 valid positions); 1 position gives another R_tv."""
  scfg = SearchConfig(k=2, group_steps=2, select="none")
  runs = {n: _run(models, PROMPTS, scfg, rewards=RewardConfig(use=("tv",), n_verify=n))
          for n in ("all", 4, 8, 1)}
  np.testing.assert_allclose(runs["all"].r_tv, runs[4].r_tv, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(runs["all"].r_tv, runs[8].r_tv, rtol=1e-5, atol=1e-6)
  assert not np.allclose(runs["all"].r_tv, runs[1].r_tv)
  nfe = lambda n: search_nfe(CFG, scfg, RewardConfig(use=("tv",), n_verify=n))["nfe"]
  assert nfe("all") == nfe(4) == 2 * 4 + 2 * 2 * 4


def test_a_search_over_a_threshold_kept_to_the_steps_verifies_each_rows_own_commits(models):
  """Threshold 1e-4 kept to 4 steps of 2 blocks: every row commits block 0 at step 0 and,
  after idling at step 1 (block 0 done), block 1 at step 2, its own second step (commit
  step 1). R_tv of a group must cover what the row committed in it: groups 0 and 2 hold
  a block each, groups 1 and 3 nothing; and it is the R_tv of the greedy search with the
  fixed schedule of one block per step (the same commits, steps counted alike)."""
  scfg = SearchConfig(k=2, group_steps=1, select="none", temperature=0.0)
  tv = RewardConfig(use=("tv",), n_verify="all")
  cfg = dataclasses.replace(TWO_BLOCKS, threshold=1e-4, fixed_steps=True)
  out = _run(models, PROMPTS, scfg, rewards=tv, cfg=cfg)
  gen_steps = out.commit_step[:, :, 5:]
  np.testing.assert_array_equal(gen_steps, np.broadcast_to([0] * 4 + [1] * 4, gen_steps.shape))
  assert (out.r_tv[..., [0, 2]] != 0).all() and (out.r_tv[..., [1, 3]] == 0).all()
  plain = _run(models, PROMPTS, dataclasses.replace(scfg, group_steps=1), rewards=tv,
               cfg=dataclasses.replace(TWO_BLOCKS, steps=2))
  np.testing.assert_array_equal(out.tokens, plain.tokens)
  np.testing.assert_allclose(out.r_tv[..., [0, 2]], plain.r_tv, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1, True, "some", 1.5])
def test_n_verify_must_be_a_positive_count_or_all(bad):
  with pytest.raises(ValueError, match="n_verify"):
    RewardConfig(n_verify=bad)
