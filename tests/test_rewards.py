"""MRO rewards on hand-built cases: token verification, perplexity, quality, weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.config import preset
from models.transformer import ModelApply, init_model
from rewards import combine, quality
from rewards.perplexity import CausalLMScorer, compact_committed, ppl_reward
from rewards.tasks import get_task
from rewards.verification import pick_positions, token_verification


def test_picked_positions_are_distinct_and_among_the_candidates():
  cand = np.zeros((3, 10), bool)
  cand[0, [1, 4, 7]] = True
  cand[1, [2]] = True
  keys = jax.random.split(jax.random.key(0), 3)
  pos, valid = map(np.asarray, pick_positions(keys, jnp.asarray(cand), 2))
  assert set(pos[0]) <= {1, 4, 7} and len(set(pos[0])) == 2 and valid[0].all()
  assert pos[1][valid[1]].tolist() == [2] and valid[1].tolist() == [True, False]
  assert not valid[2].any()


def test_a_rows_picked_positions_do_not_depend_on_the_batch():
  cand = jnp.asarray(np.random.default_rng(0).random((4, 16)) < 0.5)
  keys = jax.random.split(jax.random.key(3), 4)
  alone = pick_positions(keys[2:3], cand[2:3], 3)[0]
  together = pick_positions(keys, cand, 3)[0]
  np.testing.assert_array_equal(alone[0], together[2])


@pytest.fixture(scope="module")
def tiny_mdm():
  cfg = preset("tiny", vocab_size=32, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2,
               mlp_hidden=64)
  graphdef, params = nnx.split(init_model(cfg, seed=1))
  return ModelApply(graphdef), params


def test_token_verification_is_the_leave_one_out_log_probability(tiny_mdm):
  apply, params = tiny_mdm
  mask_id = 31
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, 30, (2, 12)), jnp.int32)
  new = np.zeros((2, 12), bool)
  new[0, 5] = new[1, 9] = True
  keys = jax.random.split(jax.random.key(0), 2)
  got = np.asarray(token_verification(apply, params, tokens, None, jnp.asarray(new), keys, 1,
                                      mask_id))
  for row, pos in ((0, 5), (1, 9)):
    masked = tokens.at[row, pos].set(mask_id)
    logits = apply(params, masked[row:row + 1])[0, pos].at[mask_id].set(-jnp.inf)
    want = jax.nn.log_softmax(logits)[tokens[row, pos]]
    np.testing.assert_allclose(got[row], want, rtol=1e-5, atol=1e-6)


def test_token_verification_is_zero_for_a_row_with_nothing_new(tiny_mdm):
  apply, params = tiny_mdm
  tokens = jnp.zeros((1, 8), jnp.int32)
  got = token_verification(apply, params, tokens, None, jnp.zeros((1, 8), bool),
                           jax.random.split(jax.random.key(0), 1), 2, 31)
  assert float(got[0]) == 0.0


def test_compacting_keeps_committed_tokens_in_order_and_skips_masks():
  tokens = jnp.asarray([[7, 8, 1, 2, 3, 4]])
  committed = jnp.asarray([[True, True, False, True, False, True]])
  packed, count = compact_committed(tokens, committed, resp_start=2, fill_id=0)
  assert packed.tolist() == [[7, 8, 2, 4, 0, 0]] and count.tolist() == [2]


def test_ppl_reward_is_bounded_and_falls_with_perplexity():
  logp_sum = jnp.asarray([0.0, -np.log(2.0) * 4, -np.log(50.0) * 4, -np.log(1e4) * 4, 0.0])
  count = jnp.asarray([4, 4, 4, 4, 0])
  r = np.asarray(ppl_reward(logp_sum, count))
  np.testing.assert_allclose(r[:3], [0.99, 0.98, 0.5], rtol=1e-5)
  assert r[3] == 0.0 and r[4] == 0.0  # capped at C, and nothing scored
  assert (np.diff(r[:4]) < 0).all() and ((r >= 0) & (r <= 0.99 + 1e-6)).all()


def test_causal_scorer_sums_next_token_log_probs_of_committed_tokens_only():
  cfg = preset("tiny", vocab_size=32, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2,
               mlp_hidden=64, causal=True)
  graphdef, params = nnx.split(init_model(cfg, seed=2))
  scorer = CausalLMScorer(ModelApply(graphdef))
  tokens = jnp.asarray([[5, 6, 7, 9, 10, 11]], jnp.int32)
  committed = jnp.asarray([[True, True, True, False, True, False]])
  logp, count = scorer.response_logp(params, tokens, None, committed, 2, 0)
  packed = jnp.asarray([[5, 6, 7, 10, 0, 0]], jnp.int32)
  lp = jax.nn.log_softmax(ModelApply(graphdef)(params, packed)[0], -1)
  want = lp[1, 7] + lp[2, 10]  # positions 2, 3 of the packed sequence given their prefix
  assert int(count[0]) == 2
  np.testing.assert_allclose(float(logp[0]), float(want), rtol=1e-5)


def test_vote_rewards_the_majority_answer_of_each_prompt():
  task = get_task("arith")
  ex = task.examples("test", limit=2)
  texts = ["<answer>5</answer>", "<answer>7</answer>", "<answer>5</answer>", "junk",
           "<answer>1</answer>", "<answer>2</answer>", "<answer>2</answer>", "<answer>2</answer>"]
  examples = [ex[0]] * 4 + [ex[1]] * 4
  groups = [0] * 4 + [1] * 4
  got = quality.correctness(task, examples, texts, groups, "vote")
  assert got.tolist() == [1, 0, 1, 0, 0, 1, 1, 1]


def test_quality_adds_the_format_bonus_to_correctness():
  task = get_task("sudoku")
  ex = task.examples("test", limit=1)[0]
  good = ex.target
  wrong_digits = good.replace(good[8], "1" if good[8] != "1" else "2", 1)
  no_tags = good.replace("<answer>", "").replace("</answer>", "")
  cfg = quality.QualityConfig(source="label")
  r = quality.quality_reward(task, [ex] * 3, [good, wrong_digits, no_tags], [0, 0, 0], cfg)
  assert r[0] == 1.5 and r[1] == 0.5 and r[2] <= 1.0


def test_verifier_source_needs_no_label_and_is_refused_where_the_task_has_none():
  task = get_task("sudoku")
  ex = task.examples("test", limit=1)[0]
  assert quality.correctness(task, [ex], [ex.target], [0], "verifier").tolist() == [1.0]
  gsm = get_task("gsm8k")
  with pytest.raises(ValueError, match="verifier"):
    quality.correctness(gsm, [ex], ["1"], [0], "verifier")


def test_reward_flags_select_the_papers_ablations():
  assert combine.RewardConfig(use="tv+q").use == ("tv", "q")
  assert combine.RewardConfig(use="all").use == combine.REWARDS
  cfg = combine.RewardConfig(use="ppl,q", w_q=2.0)
  total = combine.total(cfg, tv=np.ones(2), ppl=np.full(2, 0.5), q=np.ones(2))
  np.testing.assert_allclose(total, [2.5, 2.5])
  with pytest.raises(ValueError, match="unknown reward"):
    combine.RewardConfig(use="tv,foo")
  with pytest.raises(ValueError, match="n_verify"):
    combine.RewardConfig(n_verify=0)
  with pytest.raises(ValueError, match="quality source"):
    quality.QualityConfig(source="oracle")


def test_reward_weights_are_given_beside_their_rewards():
  assert combine.parse_reward_spec("tv,ppl=0.5,q") == (("tv", "ppl", "q"), {"ppl": 0.5})
  cfg = combine.RewardConfig(use="tv=2+q=-1", n_verify=3)
  assert cfg.use == ("tv", "q") and cfg.n_verify == 3
  assert (cfg.weight("tv"), cfg.weight("ppl"), cfg.weight("q")) == (2.0, 0.0, -1.0)
  total = combine.total(cfg, tv=np.ones(2), ppl=np.ones(2), q=np.full(2, 0.5))
  np.testing.assert_allclose(total, [1.5, 1.5])
  assert combine.RewardConfig(use="ppl=0").use == ("ppl",)
  for text, match in (("tv=abc", "'abc' is not a number"), ("tv=inf", "finite"),
                      ("foo=1", "unknown reward")):
    with pytest.raises(ValueError, match=match):
      combine.parse_reward_spec(text)
