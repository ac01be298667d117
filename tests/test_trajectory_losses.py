"""Reject-sampling and RL objectives on stored trajectories (tokens + commit steps)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.config import preset
from models.transformer import ModelApply, init_model
from mro.method.finetuning import losses
from mro.method.finetuning import sgro
from mro.sampling.sampler import generate, state_at
from mro.sampling.schedule import SamplerConfig
from mro.method.finetuning.trajectory import step_logprobs

VOCAB, MASK = 32, 31
P, GEN, T, W = 4, 8, 4, 2  # prompt, response, steps, steps per group -> G = 2 groups


@pytest.fixture(scope="module")
def setup():
  cfg = preset("tiny", vocab_size=VOCAB, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2,
               mlp_hidden=64, max_seq_len=32)
  graphdef, params = nnx.split(init_model(cfg, seed=3))
  apply = ModelApply(graphdef)
  prompts = np.random.default_rng(0).integers(0, 30, (3, P)).astype(np.int32)
  out = generate(apply, params, prompts, SamplerConfig(gen_length=GEN, steps=T,
                                                        block_length=GEN, temperature=1.0),
                 mask_id=MASK, max_seq_len=32, key=jax.random.key(5))
  batch = {"tokens": out.tokens, "commit_step": out.commit_step,
           "attn_mask": jnp.ones(out.tokens.shape, bool), "num_steps": jnp.full((3,), T)}
  return apply, params, batch


def manual_step_ce(apply, params, batch, t, targets="committed"):
  """Mean CE, predicted from the state before step t, of the tokens committed at t
  (`committed`) or of every position still masked there (`masked`)."""
  state = state_at(batch["tokens"], batch["commit_step"], t, MASK)
  logits = apply(params, state).at[..., MASK].set(-jnp.inf)
  logp = jax.nn.log_softmax(logits, -1)
  tok_logp = jnp.take_along_axis(logp, batch["tokens"][..., None], -1)[..., 0]
  picked = batch["commit_step"] == t if targets == "committed" else batch["commit_step"] >= t
  return -(jnp.where(picked, tok_logp, 0).sum(1) / picked.sum(1))  # [B]


def test_stepwise_loss_is_the_masked_ce_of_the_committed_positions(setup):
  apply, params, batch = setup
  loss, _ = losses.make_stepwise_loss(MASK, P, n_opt=T)(apply, params, batch,
                                                         jax.random.key(0))
  want = np.mean([np.asarray(manual_step_ce(apply, params, batch, t)) for t in range(T)])
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_stepwise_loss_trains_on_n_opt_consecutive_steps_of_each_trajectory(setup):
  apply, params, batch = setup
  key = jax.random.key(1)
  loss, metrics = losses.make_stepwise_loss(MASK, P, n_opt=2)(apply, params, batch, key)
  start = np.asarray(jax.random.randint(key, (3,), 0, T - 2 + 1))  # the loss's own draw
  ce = {t: np.asarray(manual_step_ce(apply, params, batch, t)) for t in range(T)}
  want = np.mean([ce[s + d][b] for b, s in enumerate(start) for d in (0, 1)])
  assert int(metrics["trained_steps"]) == 3 * 2
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_stepwise_masked_targets_are_every_position_still_masked(setup):
  apply, params, batch = setup
  key = jax.random.key(2)
  loss, metrics = losses.make_stepwise_loss(MASK, P, n_opt=2, targets="masked")(
      apply, params, batch, key)
  start = np.asarray(jax.random.randint(key, (3,), 0, T - 2 + 1))
  ce = {t: np.asarray(manual_step_ce(apply, params, batch, t, "masked")) for t in range(T)}
  want = np.mean([ce[s + d][b] for b, s in enumerate(start) for d in (0, 1)])
  assert int(metrics["trained_steps"]) == 3 * 2
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  with pytest.raises(ValueError, match="targets"):
    losses.make_stepwise_loss(MASK, P, n_opt=1, targets="all")


def full_reinforce_loss(apply, params, batch, rewards_BG):
  """-(1/B) Σ_g R_g Σ_{t in g} log π(a_t | s_t), written out directly."""
  steps = jnp.broadcast_to(jnp.arange(T), (3, T))
  logp, _, _, _ = step_logprobs(apply, params, batch["tokens"], batch["commit_step"],
                                batch["attn_mask"], steps, P, MASK)
  per_step_reward = jnp.repeat(rewards_BG, W, axis=1)
  return -(per_step_reward * logp).sum() / 3


def sgro_batch(apply, params, batch, groups, weights, rewards_BG):
  steps, _ = sgro.group_steps(groups, W)
  adv = sgro.per_step(jnp.take_along_axis(rewards_BG, groups, 1), W)
  logp, _, _, _ = step_logprobs(apply, params, batch["tokens"], batch["commit_step"],
                                batch["attn_mask"], steps, P, MASK)
  return {**batch, "steps": steps, "advantage": adv, "weight": sgro.per_step(weights, W),
          "old_logp": logp, "ref_logp": logp}


REWARDS = jnp.asarray([[1.0, -0.5], [0.3, 2.0], [-1.0, 0.7]])


def test_all_groups_with_uniform_q_give_the_full_reinforce_gradient(setup):
  apply, params, batch = setup
  q = sgro.selection_probs("uniform", REWARDS, jnp.ones_like(REWARDS))
  groups, weights = sgro.select_groups(jax.random.key(0), q, n_opt=2)
  assert np.asarray(weights).tolist() == [[1.0, 1.0]] * 3
  b = sgro_batch(apply, params, batch, groups, weights, REWARDS)
  loss_fn = losses.make_sgro_loss(MASK, P)
  g_sgro = jax.grad(lambda p: loss_fn(apply, p, b, jax.random.key(0))[0])(params)
  g_full = jax.grad(lambda p: full_reinforce_loss(apply, p, batch, REWARDS))(params)
  for a, c in zip(jax.tree.leaves(g_sgro), jax.tree.leaves(g_full)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-4, atol=1e-6)


def test_the_ratio_is_one_on_the_first_inner_step(setup):
  apply, params, batch = setup
  groups = jnp.asarray([[0], [1], [1]])
  b = sgro_batch(apply, params, batch, groups, jnp.ones((3, 1)), REWARDS)
  _, metrics = losses.make_sgro_loss(MASK, P, clip_eps=0.2, kl_coef=0.1)(
      apply, params, b, jax.random.key(0))
  np.testing.assert_allclose(float(metrics["ratio"]), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(metrics["kl"]), 0.0, atol=1e-6)


@pytest.mark.parametrize("rule", ["uniform", "advantage", "tokens"])
def test_importance_weighted_group_selection_is_unbiased(rule):
  """E[Σ_selected weight * A_g 1{g}] = A_g for every group: the average over many draws of
  the per-group coefficients of the estimator equals the full sum's coefficients."""
  adv = jnp.asarray([[1.0, -2.0, 0.5, 3.0, 0.0, -1.0]])
  tokens = jnp.asarray([[4, 1, 2, 2, 7, 3]])
  q = sgro.selection_probs(rule, adv, tokens)
  draws = 20000
  keys = jax.random.split(jax.random.key(11), draws)
  groups, weights = jax.vmap(lambda k: sgro.select_groups(k, q, 2))(keys)
  coef = jnp.zeros((draws, 6)).at[jnp.arange(draws)[:, None], groups[:, 0]].add(weights[:, 0])
  terms = np.asarray(coef * adv, np.float64)
  # Within 5 standard errors of the Monte Carlo mean (each group's own spread).
  error = np.abs(terms.mean(0) - np.asarray(adv[0]))
  standard_error = terms.std(0, ddof=1) / np.sqrt(draws)
  assert (error <= 5 * standard_error).all(), (error, standard_error)


def test_group_mean_baseline_is_the_leave_one_out_mean():
  r = np.asarray([[[1.0], [2.0], [6.0]]])
  np.testing.assert_allclose(sgro.baseline(r, "group_mean")[0, :, 0], [4.0, 3.5, 1.5])
  assert (sgro.baseline(r, "none") == 0).all()
  with pytest.raises(ValueError, match="baseline"):
    sgro.baseline(r, "mean")


def test_the_sgro_gradient_with_one_drawn_group_is_unbiased_for_the_full_gradient(setup):
  """n_opt = 1 of G = 2 groups per trajectory, drawn by select_groups with q ∝ |advantage|:
  the frequency-weighted average of the SGRO gradient over every outcome of many draws
  equals the full REINFORCE gradient (up to the sampling error of the frequencies)."""
  apply, params, batch = setup
  q = sgro.selection_probs("advantage", REWARDS, jnp.ones_like(REWARDS))
  draws = 4000
  keys = jax.random.split(jax.random.key(3), draws)
  groups, weights = jax.vmap(lambda k: sgro.select_groups(k, q, n_opt=1))(keys)
  groups, weights = np.asarray(groups), np.asarray(weights)
  outcomes, first, counts = np.unique(groups.reshape(draws, -1), axis=0, return_index=True,
                                      return_counts=True)
  assert len(outcomes) == 2 ** 3  # every combination of one group per trajectory occurs
  loss_fn = losses.make_sgro_loss(MASK, P)
  estimate = None
  for i, c in zip(first, counts):
    b = sgro_batch(apply, params, batch, jnp.asarray(groups[i]), jnp.asarray(weights[i]),
                   REWARDS)
    g = jax.grad(lambda p: loss_fn(apply, p, b, jax.random.key(0))[0])(params)
    g = jax.tree.map(lambda x: np.asarray(x) * c / draws, g)
    estimate = g if estimate is None else jax.tree.map(np.add, estimate, g)
  full = jax.grad(lambda p: full_reinforce_loss(apply, p, batch, REWARDS))(params)
  num = sum(float(np.sum((a - np.asarray(f)) ** 2))
            for a, f in zip(jax.tree.leaves(estimate), jax.tree.leaves(full)))
  den = sum(float(np.sum(np.asarray(f) ** 2)) for f in jax.tree.leaves(full))
  assert np.sqrt(num / den) < 0.05  # relative error; a 1/(G q) weight would be ~50% off
