"""MRO-RL's credit assignment, stated as properties over many random cases (not only "the
loss is finite"): potential-based shaping λ Φ(s_end) - Φ(s_start) sums to the same total
whatever path a trajectory took, and the q rules `tokens` and `advantage` give every group
the probability they say, never zero, so a drawn group's weight 1 / (n_opt q_g) is finite."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mro.method.finetuning import sgro
from mro.method.finetuning.rollouts import Rollouts, potential_shaping, quality_per_group
from rewards.quality import QualityConfig
from rewards.tasks import get_task

CASES = 50


def random_potentials(rng):
  """Φ at the G + 1 group boundaries of R trajectories, of varied sizes and scales."""
  rows, groups = rng.integers(1, 5), rng.integers(1, 8)
  return rng.normal(0.0, 10.0 ** rng.integers(-2, 3), (rows, groups + 1))


def test_shaping_with_lambda_one_sums_to_the_potential_gained_whatever_the_path():
  rng = np.random.default_rng(0)
  for _ in range(CASES):
    phi = random_potentials(rng)
    total = potential_shaping(phi, 1.0).sum(axis=1)
    want = phi[:, -1] - phi[:, 0]
    np.testing.assert_allclose(total, want, rtol=1e-9, atol=1e-12 * np.abs(phi).max())


def test_discounted_shaping_sums_to_lambda_to_the_g_times_the_final_potential():
  """Σ_g λ^g (λ Φ_{g+1} - Φ_g) = λ^G Φ_G - Φ_0: only the ends count."""
  rng = np.random.default_rng(1)
  for _ in range(CASES):
    phi, lam = random_potentials(rng), rng.uniform(0.1, 2.0)
    G = phi.shape[1] - 1
    shaped = potential_shaping(phi, lam)
    total = (shaped * lam ** np.arange(G)).sum(axis=1)
    want = lam ** G * phi[:, -1] - phi[:, 0]
    np.testing.assert_allclose(total, want, rtol=1e-9,
                               atol=1e-12 * np.abs(phi).max() * max(1.0, lam) ** G)


class CharTokenizer:
  """One id per character; the last id is EOS."""

  def __init__(self, text: str):
    self.chars = sorted(set(text))
    self.special = types.SimpleNamespace(eos=len(self.chars))

  def encode(self, text):
    return [self.chars.index(c) for c in text]

  def decode(self, ids):
    return "".join(self.chars[i] for i in ids)


@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_shaped_quality_rewards_depend_on_the_path_but_their_total_does_not(lam):
  """Two trajectories reach the same right answer, committing it left to right and right to
  left: group by group their shaped R_q differ, but each totals λ^G-discounted to the
  answer's R_q plus λ^G R_q(final) - Φ(s_0), Φ(s_0) = 0 (nothing committed yet)."""
  task = get_task("arith")
  example = task.examples("test", limit=1)[0]
  tok = CharTokenizer(example.target)
  response = tok.encode(example.target) + [tok.special.eos]
  L, G = len(response), 4
  w = -(-L // G)  # one token per step, G groups of w steps cover the response
  order = np.arange(L)
  ro = Rollouts(tokens=np.asarray([response, response]),
                commit_step=np.asarray([order, order[::-1]]), attn_mask=np.ones((2, L), bool),
                prompt_index=np.asarray([0, 0]), prompt_len=0)
  cfg = QualityConfig(source="label")
  shaped = quality_per_group(task, [example], tok, ro, G, w, cfg, True, lam)
  plain = quality_per_group(task, [example], tok, ro, G, w, cfg, False, lam)
  final = task.score(example, example.target)["correct"] * cfg.correct_value + \
      cfg.format_value  # the target is right and well formed
  np.testing.assert_allclose(plain, [[0, 0, 0, final]] * 2, rtol=1e-6)
  assert not np.allclose(shaped[0], shaped[1])  # the path changes each group's credit
  discount = lam ** np.arange(G)
  want = lam ** (G - 1) * final + lam ** G * final  # R_q on the last group, then shaping
  np.testing.assert_allclose((shaped * discount).sum(axis=1), [want, want], rtol=1e-6)


def test_tokens_per_group_counts_every_committed_position_once():
  rng = np.random.default_rng(2)
  for _ in range(CASES):
    G, w = rng.integers(1, 6), rng.integers(1, 4)
    B, R = rng.integers(1, 4), rng.integers(1, 12)
    commit = rng.integers(0, G * w, (B, R))
    counts = sgro.tokens_per_group(commit, G, w)
    assert counts.shape == (B, G) and (counts.sum(axis=1) == R).all()
    for g in range(G):
      np.testing.assert_array_equal(counts[:, g], ((commit // w) == g).sum(axis=1))


def test_the_tokens_rule_gives_each_group_its_share_of_the_committed_tokens():
  rng = np.random.default_rng(3)
  floor = 1e-3
  for _ in range(CASES):
    tokens = rng.integers(0, 9, (rng.integers(1, 4), rng.integers(1, 7)))
    q = np.asarray(sgro.selection_probs("tokens", jnp.zeros(tokens.shape),
                                        jnp.asarray(tokens), floor=floor), np.float64)
    want = (tokens + floor) / (tokens + floor).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(q, want, rtol=1e-5)
    assert (q > 0).all()  # a group that committed nothing can still be drawn


def test_the_advantage_rule_weighs_groups_by_the_size_of_their_advantage():
  rng = np.random.default_rng(4)
  floor = 1e-3
  for _ in range(CASES):
    adv = rng.normal(0.0, 10.0 ** rng.integers(-2, 2), (rng.integers(1, 4), rng.integers(1, 7)))
    adv[:, 0] = 0.0  # a group without advantage
    q = np.asarray(sgro.selection_probs("advantage", jnp.asarray(adv), jnp.zeros(adv.shape),
                                        floor=floor), np.float64)
    flipped = np.asarray(sgro.selection_probs("advantage", jnp.asarray(-adv),
                                              jnp.zeros(adv.shape), floor=floor))
    want = (np.abs(adv) + floor) / (np.abs(adv) + floor).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(q, want, rtol=1e-5)
    np.testing.assert_allclose(flipped, q, rtol=1e-6)  # the sign does not matter
    assert (q > 0).all()


@pytest.mark.parametrize("rule", ["tokens", "advantage"])
def test_a_drawn_groups_weight_is_one_over_n_opt_q_and_finite(rule):
  adv = jnp.asarray([[0.0, 2.0, -1.0, 0.5]])  # group 0: no advantage
  tokens = jnp.asarray([[0, 5, 2, 1]])  # group 0: no tokens
  q = sgro.selection_probs(rule, adv, tokens)
  for seed in range(CASES):
    groups, weights = sgro.select_groups(jax.random.key(seed), q, n_opt=2)
    picked = np.asarray(jnp.take_along_axis(q, groups, axis=1))
    np.testing.assert_allclose(np.asarray(weights), 1.0 / (2 * picked), rtol=1e-6)
    assert np.isfinite(np.asarray(weights)).all()
