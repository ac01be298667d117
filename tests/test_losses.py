"""Masked-diffusion losses: parity with the reference fixture, and the masking rules.

The fixture's `loss.npz` gives clean sequences, masks and p_mask, so the losses are
checked without any random number: SFT (`loss`) and pretraining (`loss_pretrain`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models.checkpoints import load_model
from models.transformer import ModelApply
from mro.training import losses
@pytest.fixture(scope="module")
def ref(fixture_dir):
  """(apply, params, mask id, loss.npz as a dict) of the reference fixture model."""
  model, _, ids = load_model(fixture_dir)
  graphdef, params = nnx.split(model)
  with np.load(fixture_dir / "loss.npz") as z:
    data = dict(z)
  return ModelApply(graphdef), params, ids.mask, data


def full_logits(apply, params, tokens):
  return np.asarray(apply(params, jnp.asarray(tokens)), np.float64)


def np_ce(logits_BLV, targets_BL):
  """Cross-entropy per position in float64 NumPy (independent of mro.losses)."""
  m = logits_BLV.max(-1, keepdims=True)
  lse = (m + np.log(np.exp(logits_BLV - m).sum(-1, keepdims=True)))[..., 0]
  gold = np.take_along_axis(logits_BLV, targets_BL[..., None], -1)[..., 0]
  return lse - gold


# --- parity with loss.npz --------------------------------------------------------------


def test_fixture_masks_are_the_noisy_ids_of_the_mask_token(ref):
  _, _, mask_id, z = ref
  np.testing.assert_array_equal(np.where(z["mask"], mask_id, z["input_ids"]), z["noisy_ids"])
  np.testing.assert_array_equal(
      np.where(z["pretrain_mask"], mask_id, z["pretrain_input_ids"]), z["pretrain_noisy_ids"])


@pytest.mark.parametrize("resp_start", [0, 8], ids=["all_positions", "response_window"])
def test_sft_loss_reproduces_the_reference_loss(ref, resp_start):
  apply, params, mask_id, z = ref
  assert (z["prompt_length"] == resp_start).all() or resp_start == 0
  loss = losses.sft_loss_given_mask(apply, params, z["input_ids"], z["mask"], z["p_mask"],
                                    z["answer_length"], mask_id, resp_start=resp_start)
  np.testing.assert_allclose(float(loss), float(z["loss"]), rtol=1e-5)


def test_per_token_cross_entropy_matches_the_reference_at_masked_positions(ref):
  apply, params, mask_id, z = ref
  noisy = jnp.where(z["mask"], mask_id, z["input_ids"])
  _, ce = losses.weighted_masked_ce(apply, params, noisy, z["input_ids"], z["mask"],
                                    z["p_mask"], None)
  np.testing.assert_allclose(np.asarray(ce), z["token_ce"], rtol=1e-5, atol=1e-5)


def test_pretraining_loss_reproduces_the_reference_loss(ref):
  apply, params, mask_id, z = ref
  loss = losses.mdm_loss_given_mask(apply, params, z["pretrain_input_ids"], z["pretrain_mask"],
                                    z["pretrain_p_mask"], mask_id)
  np.testing.assert_allclose(float(loss), float(z["loss_pretrain"]), rtol=1e-5)


def test_an_all_true_attention_mask_gives_the_same_losses_as_none(ref):
  apply, params, mask_id, z = ref
  ones = np.ones_like(z["input_ids"], bool)
  sft = losses.sft_loss_given_mask(apply, params, z["input_ids"], z["mask"], z["p_mask"],
                                   z["answer_length"], mask_id, ones, resp_start=8)
  pre = losses.mdm_loss_given_mask(apply, params, z["pretrain_input_ids"], z["pretrain_mask"],
                                   z["pretrain_p_mask"], mask_id, ones)
  np.testing.assert_allclose(float(sft), float(z["loss"]), rtol=1e-5)
  np.testing.assert_allclose(float(pre), float(z["loss_pretrain"]), rtol=1e-5)


# --- the sampled objective (make_mdm_loss) against the formula ------------------------


def fixture_batch(z, prompt_len=8):
  tokens = z["input_ids"]
  eligible = np.zeros_like(tokens, bool)
  eligible[:, prompt_len:] = True
  return {"tokens": jnp.asarray(tokens), "attn_mask": jnp.ones_like(tokens, bool),
          "eligible": jnp.asarray(eligible)}


@pytest.mark.parametrize("objective", ["sft", "pretrain"])
def test_the_sampled_objective_equals_the_method_formula_for_its_own_mask(ref, objective):
  """method.md §1, recomputed in float64 NumPy from full logits with the drawn mask."""
  apply, params, mask_id, z = ref
  batch = fixture_batch(z)
  key = jax.random.key(3)
  eps = 1e-3
  loss, metrics = losses.make_mdm_loss(mask_id, eps, objective, resp_start=8)(
      apply, params, batch, key)
  mask, p_mask = (np.asarray(a) for a in losses.draw_mask(key, batch["eligible"], eps))
  assert mask.any(), "the key drew an empty mask; pick another"
  tokens = np.asarray(batch["tokens"])
  ce = np_ce(full_logits(apply, params, np.where(mask, mask_id, tokens)), tokens)
  per_row = np.where(mask, ce, 0.0).sum(1) / p_mask
  if objective == "sft":
    want = np.mean(per_row / np.asarray(batch["eligible"]).sum(1))
  else:
    want = per_row.sum() / tokens.size
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  assert int(metrics["masked_tokens"]) == mask.sum()
  assert int(metrics["tokens"]) == tokens.size


def test_sft_normalises_by_the_eligible_response_length_not_the_window(ref):
  """train_on_padding_eos=False: the EOS padding is neither masked nor counted."""
  apply, params, mask_id, z = ref
  batch = fixture_batch(z)
  eligible = np.asarray(batch["eligible"]).copy()
  eligible[0, 18:] = False  # row 0: 10 real response tokens, 6 EOS pads excluded
  batch["eligible"] = jnp.asarray(eligible)
  key = jax.random.key(5)
  loss, _ = losses.make_mdm_loss(mask_id, 1e-3, "sft", resp_start=8)(apply, params, batch, key)
  mask, p_mask = (np.asarray(a) for a in losses.draw_mask(key, batch["eligible"], 1e-3))
  assert not mask[0, 18:].any()
  tokens = np.asarray(batch["tokens"])
  ce = np_ce(full_logits(apply, params, np.where(mask, mask_id, tokens)), tokens)
  per_row = np.where(mask, ce, 0.0).sum(1) / p_mask / np.array([10, 16])
  np.testing.assert_allclose(float(loss), per_row.mean(), rtol=1e-5)


# --- draw_mask and the SFT rule ---------------------------------------------------------


def test_draw_mask_never_masks_an_ineligible_position_and_p_mask_is_in_eps_1():
  eps = 1e-3
  eligible = jax.random.bernoulli(jax.random.key(0), 0.5, (64, 48))
  masks, p = jax.vmap(lambda k: losses.draw_mask(k, eligible, eps))(
      jax.random.split(jax.random.key(1), 200))
  masks, p = np.asarray(masks), np.asarray(p)
  assert not (masks & ~np.asarray(eligible)).any()
  assert p.min() >= eps and p.max() <= 1.0
  assert masks.any() and (masks != np.asarray(eligible)).any()  # not trivially empty or full


def test_draw_mask_masks_each_eligible_token_with_probability_p_mask():
  eligible = jnp.ones((16, 4096), bool)
  mask, p = (np.asarray(a) for a in losses.draw_mask(jax.random.key(7), eligible, 1e-3))
  rate = mask.mean(1)
  sigma = np.sqrt(p * (1 - p) / 4096)
  assert (np.abs(rate - p) < 6 * sigma + 1e-3).all(), np.c_[rate, p]
  assert p.max() - p.min() > 0.3  # t differs between rows (drawn per sequence)


def test_the_sft_objective_never_masks_a_prompt_token():
  """The network sees the noisy input: record it through a stub `apply`."""
  B, P, R, V, mask_id = 8, 6, 10, 20, 19
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 15, (B, P + R)).astype(np.int32)
  eligible = np.zeros((B, P + R), bool)
  eligible[:, P:] = True
  batch = {"tokens": jnp.asarray(tokens), "attn_mask": jnp.ones((B, P + R), bool),
           "eligible": jnp.asarray(eligible)}
  seen = []

  def stub_apply(params, noisy, attn, positions):
    seen.append((np.asarray(noisy), np.asarray(positions)))
    return jnp.zeros((*positions.shape, V))

  for objective in ("sft", "pretrain"):
    batch["eligible"] = jnp.asarray(eligible if objective == "sft" else np.ones_like(eligible))
    loss_fn = losses.make_mdm_loss(mask_id, 1e-3, objective, resp_start=P)
    for i in range(20):
      loss_fn(stub_apply, None, batch, jax.random.key(i))
  sft, pretrain = seen[:20], seen[20:]
  for noisy, positions in sft:
    np.testing.assert_array_equal(noisy[:, :P], tokens[:, :P])
    np.testing.assert_array_equal(positions[0], np.arange(P, P + R))  # logits: response only
  assert any((noisy[:, P:] == mask_id).any() for noisy, _ in sft)
  # the check can fail: the pretraining objective does mask prompt positions
  assert any((noisy[:, :P] == mask_id).any() for noisy, _ in pretrain)


def test_make_mdm_loss_rejects_an_unknown_objective():
  with pytest.raises(ValueError, match="'rl'"):
    losses.make_mdm_loss(mask_id=3, objective="rl")


# --- the causal scorer's next-token objective ---------------------------------------------


def test_ar_loss_is_the_mean_next_token_cross_entropy_of_the_response(ref, fixture_dir):
  from models.checkpoints import load_model as load
  causal, _, _ = load(fixture_dir, causal=True)
  graphdef, params = nnx.split(causal)
  apply = ModelApply(graphdef)
  tokens = ref[3]["input_ids"]
  P = 8
  eligible = np.zeros_like(tokens, bool)
  eligible[:, P:] = True
  eligible[0, -3:] = False  # a row whose last targets do not count
  batch = {"tokens": jnp.asarray(tokens), "attn_mask": jnp.ones(tokens.shape, bool),
           "eligible": jnp.asarray(eligible)}
  got = float(losses.ar_loss(apply, params, batch, resp_start=P))
  logits = full_logits(apply, params, tokens)
  ce = np_ce(logits[:, P - 1:-1], tokens[:, P:])
  want = (ce * eligible[:, P:]).sum() / eligible[:, P:].sum()
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_the_ar_objective_needs_a_prompt():
  with pytest.raises(ValueError, match="resp_start"):
    losses.make_mdm_loss(0, objective="ar", resp_start=0)
