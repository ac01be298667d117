"""The GRPO-family objectives on hand-built cases: gradients against a float64 NumPy
computation of each paper's formula, the estimators' masks, advantages, the ratio on the
first inner step, and a zero-advantage batch through the real train step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from models.config import preset
from models.sharding import MeshConfig, make_mesh
from mro import config as exp_config
from mro.training.settings import TrainConfig
from mro.method.finetuning import grpo
from mro.method.finetuning import grpo_batches
from mro.method.finetuning import losses
from mro.training.step import init_state, jit_train_step, lr_schedule, make_optimizer

V, MASK, EOS = 7, 6, 5
P, R = 3, 4  # prompt and completion lengths
K = 3  # completions per prompt
TOKENS = np.array([  # prompt (one left pad: 0) | completion (EOS = 5)
    [0, 1, 2, 3, 4, 5, 5], [0, 1, 2, 4, 4, 1, 3], [0, 1, 2, 2, 5, 5, 5],
    [1, 3, 4, 1, 1, 2, 5], [1, 3, 4, 3, 2, 1, 4], [1, 3, 4, 4, 4, 4, 4]], np.int32)
ATTN = np.concatenate([np.array([[0, 1, 1]] * 3 + [[1, 1, 1]] * 3, bool),
                       np.ones((6, R), bool)], 1)
REWARDS = np.array([1.0, 0.0, 1.5, 0.5, 0.0, 2.0])
SEED, ROWS = 3, np.arange(100, 106)


def toy_apply(params, tokens, attn, positions):
  """A hand-built 'mask predictor': logits at position j are E[x_j] + C[j] plus the mean of
  M[x] over the attended sequence, so masking the prompt or the completion matters."""
  w = attn.astype(jnp.float32)[..., None]
  ctx = (params["M"][tokens] * w).sum(1) / w.sum(1)
  picked = jnp.take_along_axis(tokens, positions, 1)
  return params["E"][picked] + params["C"][positions] + ctx[:, None, :]


def np_apply(params, tokens):
  """toy_apply in float64 NumPy, logits at the completion positions [B, R, V]."""
  w = ATTN.astype(np.float64)[..., None]
  ctx = (params["M"][tokens] * w).sum(1) / w.sum(1)
  pos = np.arange(P, P + R)
  return params["E"][tokens[:, P:]] + params["C"][pos][None] + ctx[:, None, :]


def np_token_logp(params, noisy):
  logits = np_apply(params, noisy)
  logits[..., MASK] = -np.inf
  logits = logits - logits.max(-1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return np.take_along_axis(logp, TOKENS[:, P:, None], -1)[..., 0]


def np_completion_mask():
  """The tokens of each completion up to and including its first EOS, written out."""
  c = np.zeros((6, R))
  for i, row in enumerate(TOKENS[:, P:]):
    for k, tok in enumerate(row):
      c[i, k] = 1
      if tok == EOS:
        break
  return c


def params_at(seed, scale=1.0):
  rng = np.random.default_rng(seed)
  return {n: scale * rng.normal(size=(V, V) if n != "C" else (P + R, V)) for n in "ECM"}


def np_grad(loss, params, h=1e-6):
  """Central finite differences of a float64 loss, entry by entry."""
  out = {}
  for name, x in params.items():
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
      up = {k: v.copy() for k, v in params.items()}
      down = {k: v.copy() for k, v in params.items()}
      up[name][idx] += h
      down[name][idx] -= h
      g[idx] = (loss(up) - loss(down)) / (2 * h)
    out[name] = g
  return out


def cfg_for(method, **fields):
  return exp_config.from_dict({"rl": {"method": method, "rollouts_per_prompt": K,
                                      "prompts_per_batch": 2, "inner_steps": 2},
                               method: fields})


def build(cfg, old, ref, rewards=REWARDS, apply=toy_apply):
  return grpo_batches.assemble(cfg, apply, old, ref, TOKENS, ATTN, rewards, EOS, MASK, P, SEED,
                          ROWS)


def jax_grad(loss_fn, batch, params):
  f = lambda p: loss_fn(toy_apply, p, batch, jax.random.key(0))[0]
  return jax.grad(f)(jax.tree.map(jnp.float32, params))


# The GRPO objectives are means of advantage-weighted terms that nearly cancel (a group's
# advantages sum to zero), so float32 rounding scales with the terms (|advantage| <=
# max|reward|), not with the small result: rtol=1e-5 of diffu-GRPO's 0.003 allowed 3e-8,
# a quarter of eps32 of one term, and passed only by luck (the error here was 2.4e-8).
LOSS_ATOL = helpers.rounding_atol(REWARDS, R * len(TOKENS))


def assert_close(g_jax, g_np):
  scale = max(np.abs(v).max() for v in g_np.values())
  assert scale > 1e-3  # a gradient that is not trivially zero
  for name in g_np:
    np.testing.assert_allclose(np.asarray(g_jax[name]), g_np[name], atol=2e-5 * scale,
                               rtol=1e-4)


def np_clipped_grpo(phi, old, ref, adv, c, eps, beta, norm):
  """The GRPO objective as d1 writes it (per token ratio, clip, k3 KL), negated."""
  ratio = np.exp(phi - old)
  surrogate = np.minimum(ratio * adv[:, None], np.clip(ratio, 1 - eps, 1 + eps) * adv[:, None])
  kl = np.exp(ref - phi) - (ref - phi) - 1
  per_token = (surrogate - beta * kl) * c
  if norm == "tokens":
    return -per_token.sum() / c.sum()
  return -np.mean(per_token.sum(1) / c.sum(1))


@pytest.mark.parametrize("norm", ["sequence", "tokens"])
def test_the_diffu_grpo_gradient_is_the_papers_formula_in_float64(norm):
  theta, old, ref = params_at(0), params_at(1, 0.3), params_at(2, 0.3)
  old = {n: theta[n] + old[n] for n in theta}
  ref = {n: theta[n] + ref[n] for n in theta}
  cfg = cfg_for("diffu_grpo", p_mask_prompt=0.4, clip_eps=0.2, kl_coef=0.1, loss_norm=norm)
  shared, per_step = build(cfg, old, ref)
  k = 1
  batch = {**shared, **{n: v[k] for n, v in per_step.items()}}
  prompt_masked = batch["noise"][:, 0, :P]
  assert prompt_masked.any() and not prompt_masked[~ATTN[:, :P]].any()

  def paper(p):  # prompt tokens masked where drawn, the completion fully masked
    noisy = TOKENS.copy()
    noisy[:, :P] = np.where(prompt_masked, MASK, TOKENS[:, :P])
    noisy[:, P:] = MASK
    phi = lambda q: np_token_logp(q, noisy)
    adv = (REWARDS.reshape(2, K) - REWARDS.reshape(2, K).mean(1, keepdims=True)).ravel()
    return np_clipped_grpo(phi(p), phi(old), phi(ref), adv, np_completion_mask(), 0.2, 0.1,
                           norm)

  loss_fn = losses.make_diffu_grpo_loss(MASK, P, cfg.diffu_grpo)
  loss, metrics = loss_fn(toy_apply, jax.tree.map(jnp.float32, theta), batch, None)
  np.testing.assert_allclose(float(loss), paper(theta), rtol=1e-5, atol=LOSS_ATOL)
  assert 0 < float(metrics["clip_frac"]) < 1  # both branches of the min are exercised
  assert_close(jax_grad(loss_fn, batch, theta), np_grad(paper, theta))


@pytest.mark.parametrize("estimator", ["pair", "released"])
def test_the_coupled_grpo_gradient_is_the_papers_formula_in_float64(estimator):
  theta, old = params_at(3), params_at(4, 0.3)
  old = {n: theta[n] + old[n] for n in theta}
  cfg = cfg_for("coupled_grpo", estimator=estimator, clip_eps=0.2, kl_coef=0.05)
  shared, per_step = build(cfg, old, params_at(5))
  k = 0
  batch = {**shared, **{n: v[k] for n, v in per_step.items()}}
  _, _, t = grpo.coupled_noise(grpo.mask_keys(SEED, ROWS), k, P, R, 0.2, 0.8, estimator)
  m = batch["noise"][:, -2, P:]  # the first mask of the pair (its complement comes last)

  def paper(p, q=None):
    def phi(q):
      first, second, full = TOKENS.copy(), TOKENS.copy(), TOKENS.copy()
      first[:, P:] = np.where(m, MASK, TOKENS[:, P:])
      second[:, P:] = np.where(m, TOKENS[:, P:], MASK)
      full[:, P:] = MASK
      lp1, lp2 = np_token_logp(q, first), np_token_logp(q, second)
      if estimator == "pair":  # each token scored where it is masked
        return np.where(m, lp1, lp2)
      weighted = np.where(m, lp1 / t[:, None], lp2 / (1 - t[:, None]))
      return (np_token_logp(q, full) + weighted) / 2
    r = REWARDS.reshape(2, K)
    adv = (r - (r.sum(1, keepdims=True) - r) / (K - 1)).ravel()  # leave-one-out
    return np_clipped_grpo(phi(p), phi(old), phi(params_at(5)), adv, np_completion_mask(),
                           0.2, 0.05, "sequence")

  loss_fn = losses.make_coupled_grpo_loss(MASK, P, cfg.coupled_grpo)
  loss, _ = loss_fn(toy_apply, jax.tree.map(jnp.float32, theta), batch, None)
  np.testing.assert_allclose(float(loss), paper(theta), rtol=1e-5, atol=LOSS_ATOL)
  assert_close(jax_grad(loss_fn, batch, theta), np_grad(paper, theta))


def test_the_wd1_gradient_is_the_papers_weighted_likelihood_in_float64():
  theta = params_at(6)
  cfg = cfg_for("wd1", psi=0.7, negative_weight=0.5, p_mask_prompt=0.3)
  shared, per_step = build(cfg, None, None)
  assert "old_logp" not in per_step  # ratio-free: no π_old, no π_ref
  batch = {**shared, **{n: v[1] for n, v in per_step.items()}}
  prompt_masked = batch["noise"][:, 0, :P]

  def paper(p):
    noisy = TOKENS.copy()
    noisy[:, :P] = np.where(prompt_masked, MASK, TOKENS[:, :P])
    noisy[:, P:] = MASK
    logpi = (np_token_logp(p, noisy) * np_completion_mask()).sum(1).reshape(2, K)
    r = REWARDS.reshape(2, K)
    a = r - r.mean(1, keepdims=True)
    w_pos = np.exp(0.7 * a) / np.exp(0.7 * a).sum(1, keepdims=True)
    w_neg = np.exp(-0.7 * a) / np.exp(-0.7 * a).sum(1, keepdims=True)
    return -np.mean((w_pos * logpi).sum(1) - 0.5 * (w_neg * logpi).sum(1))

  loss_fn = losses.make_wd1_loss(MASK, P)
  loss, _ = loss_fn(toy_apply, jax.tree.map(jnp.float32, theta), batch, None)
  np.testing.assert_allclose(float(loss), paper(theta), rtol=1e-5, atol=LOSS_ATOL)
  assert_close(jax_grad(loss_fn, batch, theta), np_grad(paper, theta))


@pytest.mark.parametrize("estimator", ["pair", "released"])
def test_the_coupled_masks_score_every_completion_token_exactly_once(estimator):
  keys = grpo.mask_keys(0, np.arange(64))
  for step in range(3):
    noise, pick, t = grpo.coupled_noise(keys, step, 5, 12, 0.2, 0.8, estimator)
    pair = noise[:, -2:]
    assert not noise[:, :, :5].any()  # the prompt stays visible
    assert (pair[:, :, 5:].sum(1) == 1).all()  # each completion position masked once
    assert ((0.2 <= t) & (t <= 0.8)).all() and len(np.unique(t)) == 64  # t per row
    if estimator == "pair":  # read from the copy where it is masked, and only there
      np.testing.assert_array_equal(pick, pair[:, :, 5:].astype(np.float32))
    else:
      assert noise[:, 0, 5:].all()  # the released code's fully masked copy
      np.testing.assert_allclose(pick[:, 1] * 2 * t[:, None] + pick[:, 2] * 2 * (1 - t[:, None]),
                                 1.0, rtol=1e-6)
  first = grpo.coupled_noise(keys, 0, 5, 12, 0.2, 0.8)[0]
  again = grpo.coupled_noise(grpo.mask_keys(0, np.arange(64)), 0, 5, 12, 0.2, 0.8)[0]
  np.testing.assert_array_equal(first, again)  # keyed: a resumed run redraws them
  assert (first != grpo.coupled_noise(keys, 1, 5, 12, 0.2, 0.8)[0]).any()  # fresh per step


def test_d1_masks_only_real_prompt_tokens_at_the_configured_rate():
  keys = grpo.mask_keys(1, np.arange(400))
  attn = np.ones((400, 20), bool)
  attn[:, :5] = False  # left padding
  noise, pick = grpo.d1_noise(keys, 0, attn, 6, 0.15)
  assert noise[:, 0, 20:].all() and not noise[:, 0, :5].any() and (pick == 1).all()
  assert abs(noise[:, 0, 5:20].mean() - 0.15) < 0.01


def test_group_advantages_and_completion_masks():
  r = np.array([[1.0, 0.0, 2.0], [3.0, 3.0, 3.0]])
  np.testing.assert_allclose(grpo.group_advantages(r, "centered"), [[0, -1, 1], [0, 0, 0]])
  np.testing.assert_allclose(grpo.group_advantages(r, "leave_one_out"),
                             [[0, -1.5, 1.5], [0, 0, 0]])
  np.testing.assert_allclose(grpo.group_advantages(r, "normalized")[0],
                             np.array([0, -1, 1]) / (1 + grpo.STD_EPS))
  np.testing.assert_array_equal(grpo.completion_mask(TOKENS[:, P:], EOS),
                                np_completion_mask().astype(bool))


@pytest.mark.parametrize("method", ["diffu_grpo", "coupled_grpo"])
def test_the_ratio_is_one_on_every_slice_before_the_policy_moves(method):
  """φ_old of inner step k is measured under step k's own masks, so a policy that has
  not moved has ratio 1 (and the first inner step always has an unmoved policy)."""
  theta = params_at(7)
  cfg = cfg_for(method, kl_coef=0.1)
  shared, per_step = build(cfg, theta, params_at(8))
  loss_fn = grpo_batches.make_loss(cfg, MASK, P)
  for k in range(2):
    batch = {**shared, **{n: v[k] for n, v in per_step.items()}}
    _, metrics = loss_fn(toy_apply, jax.tree.map(jnp.float32, theta), batch, None)
    np.testing.assert_allclose(float(metrics["ratio"]), 1.0, rtol=1e-6)
    assert float(metrics["clip_frac"]) == 0.0


@pytest.mark.parametrize("method", ["diffu_grpo", "coupled_grpo", "wd1"])
def test_a_zero_advantage_batch_changes_the_weights_only_by_weight_decay(method):
  model_cfg = preset("tiny", vocab_size=V, d_model=16, n_layers=1, n_heads=2, n_kv_heads=2,
                     mlp_hidden=32, max_seq_len=16)
  train = TrainConfig(steps=2, batch_size=6, lr=1e-2, warmup_steps=0, weight_decay=0.1)
  mesh = make_mesh(MeshConfig())
  optimizer = make_optimizer(train)
  fields = {} if method == "wd1" else {"kl_coef": 0.0}
  cfg = cfg_for(method, **fields)
  apply, state, shardings = init_state(model_cfg, optimizer, 0, mesh)
  start = jax.tree.map(np.asarray, state.params)
  step_fn = jit_train_step(apply, grpo_batches.make_loss(cfg, MASK, P), optimizer, train,
                           shardings, mesh)

  def two_steps(rewards):
    s = init_state(model_cfg, optimizer, 0, mesh, params=start)[1]
    shared, per_step = build(cfg, start, start, rewards=rewards, apply=apply)
    for k in range(2):
      s, _ = step_fn(s, {**shared, **{n: v[k] for n, v in per_step.items()}})
    return jax.tree.map(np.asarray, s.params)

  decay = np.prod([1 - float(lr_schedule(train)(i)) * 0.1 for i in range(2)])
  assert decay < 1
  flat = jax.tree.leaves
  after = two_steps(np.full(6, 0.75))  # every completion of a prompt rewarded alike
  for a, s in zip(flat(after), flat(start)):
    np.testing.assert_allclose(a, s * (decay if s.ndim >= 2 else 1.0), rtol=1e-6, atol=1e-9)
  moved = two_steps(REWARDS)
  assert any(np.abs(a - s * (decay if s.ndim >= 2 else 1.0)).max() > 1e-4
             for a, s in zip(flat(moved), flat(start)))
