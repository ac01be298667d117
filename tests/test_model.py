"""The Transformer: reference parity, attention semantics, shapes, metadata, config checks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import helpers
from models import config as mc
from models.transformer import abstract_model, init_model

ATOL = 1e-4  # fixture README, "Recommended tolerances"


def _small_cfg(**overrides) -> mc.ModelConfig:
  base = dict(vocab_size=64, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden=96,
              max_seq_len=64)
  return mc.preset("tiny", **{**base, **overrides})


def _tokens(rng, shape, vocab):
  return rng.integers(0, vocab, shape).astype(np.int32)


# --- parity with the reference fixture ------------------------------------------------


def test_logits_match_reference_without_padding(llada_tiny, forward_ref):
  logits = llada_tiny.logits(forward_ref["input_ids"])
  assert logits.shape == forward_ref["logits"].shape and logits.dtype == np.float32
  np.testing.assert_allclose(logits, forward_ref["logits"], atol=ATOL, rtol=0)


def test_eager_model_call_matches_reference(llada_tiny, forward_ref):
  logits = np.asarray(llada_tiny.model(jnp.asarray(forward_ref["input_ids"])))
  np.testing.assert_allclose(logits, forward_ref["logits"], atol=ATOL, rtol=0)


def test_padded_logits_match_reference_at_real_positions(llada_tiny, forward_ref):
  mask = forward_ref["attention_mask"]
  assert (mask == 0).any(), "fixture should contain padding"
  logits = llada_tiny.logits(forward_ref["input_ids_padded"], mask)
  real = mask.astype(bool)
  np.testing.assert_allclose(logits[real], forward_ref["logits_padded"][real], atol=ATOL, rtol=0)


# --- attention semantics --------------------------------------------------------------


def test_attention_is_bidirectional(llada_tiny, forward_ref):
  tokens = forward_ref["input_ids"][:1].copy()
  changed = tokens.copy()
  changed[0, 30] = (changed[0, 30] + 1) % llada_tiny.cfg.vocab_size
  a, b = llada_tiny.logits(tokens), llada_tiny.logits(changed)
  # A later token moves the logits of every earlier position.
  assert np.abs(a[0, :30] - b[0, :30]).max(-1).min() > 1e-3


def test_causal_flag_hides_later_tokens(fixture_dir, llada_tiny, forward_ref):
  causal = helpers.load(fixture_dir, causal=True)
  assert causal.cfg.causal
  tokens = forward_ref["input_ids"][:1].copy()
  changed = tokens.copy()
  changed[0, 30] = (changed[0, 30] + 1) % causal.cfg.vocab_size
  a, b = causal.logits(tokens), causal.logits(changed)
  np.testing.assert_allclose(a[0, :30], b[0, :30], atol=1e-6, rtol=0)
  assert np.abs(a[0, 30:] - b[0, 30:]).max() > 1e-3
  # Not the bidirectional model in disguise: the first position sees only itself.
  assert np.abs(a - llada_tiny.logits(tokens))[0, :-1].max(-1).min() > 1e-3


def _build(cfg: mc.ModelConfig, seed: int):
  """(graphdef, params, jitted forward) of a random model, filled with NumPy (no init compile).

  Norm weights are random too, so a port that ignores them would differ.
  """
  rng = np.random.default_rng(seed)
  graphdef, params = abstract_model(cfg)
  for path, var in nnx.to_flat_state(params):
    if len(var.shape) == 1:
      value = rng.uniform(0.5, 1.5, var.shape)
    else:  # unit-variance embeddings; kernels scaled by fan-in (chosen by name, not shape)
      value = rng.normal(0.0, 1.0 if path == ("wte",) else var.shape[0] ** -0.5, var.shape)
    var.set_value(jnp.asarray(value, var.dtype))
  return graphdef, params, jax.jit(lambda p, t: nnx.merge(graphdef, p)(t))


def test_grouped_kv_heads_equal_explicitly_repeated_kv_heads():
  gqa_cfg = _small_cfg(n_heads=4, n_kv_heads=2)
  mha_cfg = dataclasses.replace(gqa_cfg, n_kv_heads=4)
  _, gqa_params, gqa_forward = _build(gqa_cfg, seed=3)
  mha_graphdef, mha_params = abstract_model(mha_cfg)
  # Copy every weight; K/V heads repeated so query head h uses KV head h // groups.
  hd, groups = gqa_cfg.resolved_head_dim, gqa_cfg.n_heads // gqa_cfg.n_kv_heads
  source = dict(nnx.to_flat_state(gqa_params))
  for path, var in nnx.to_flat_state(mha_params):
    value = source[path][...]
    if path[-2:-1] in (("k_proj",), ("v_proj",)):
      d = value.shape[0]
      value = jnp.repeat(value.reshape(d, -1, hd), groups, axis=1).reshape(d, -1)
    assert value.shape == var.shape, path
    var.set_value(value)
  mha_forward = jax.jit(lambda p, t: nnx.merge(mha_graphdef, p)(t))
  tokens = _tokens(np.random.default_rng(0), (2, 24), gqa_cfg.vocab_size)
  out_gqa = np.asarray(gqa_forward(gqa_params, tokens))
  out_mha = np.asarray(mha_forward(mha_params, tokens))
  assert np.abs(out_gqa).max() > 1e-2
  # Same sums in another order: the matmul kernel blocks a 32-wide K/V projection unlike a
  # 64-wide one (measured here: 2.5 eps32 * max|logit|); a wrong head mapping moves O(1).
  atol = helpers.rounding_atol(out_mha, gqa_cfg.d_model)
  np.testing.assert_allclose(out_gqa, out_mha, atol=atol, rtol=0)


def test_grouped_kv_heads_shrink_the_kv_projections():
  cfg = _small_cfg(n_heads=4, n_kv_heads=1)
  graphdef, params, forward = _build(cfg, seed=0)
  attn = nnx.merge(graphdef, params).blocks[0].attn
  assert attn.k_proj.kernel.shape == (64, 16) and attn.v_proj.kernel.shape == (64, 16)
  assert attn.q_proj.kernel.shape == (64, 64)
  tokens = _tokens(np.random.default_rng(1), (2, 10), cfg.vocab_size)
  assert np.isfinite(np.asarray(forward(params, tokens))).all()


# --- padding ---------------------------------------------------------------------------


def test_left_padded_row_matches_the_unpadded_row(llada_tiny, forward_ref):
  real = forward_ref["input_ids"][0, 10:]  # 30 real tokens
  pad = llada_tiny.ids.pad
  padded = np.concatenate([np.full(10, pad, np.int32), real])[None]
  mask = (np.arange(40) >= 10).astype(np.int32)[None]
  got = llada_tiny.logits(padded, mask)[0, 10:]
  want = llada_tiny.logits(real[None])[0]
  np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_padding_token_ids_do_not_leak_into_real_positions(llada_tiny, forward_ref):
  tokens, mask = forward_ref["input_ids_padded"], forward_ref["attention_mask"]
  scrambled = np.where(mask == 1, tokens, (np.arange(40) * 7 % 280)[None]).astype(np.int32)
  a, b = llada_tiny.logits(tokens, mask), llada_tiny.logits(scrambled, mask)
  real = mask.astype(bool)
  np.testing.assert_allclose(a[real], b[real], atol=1e-6, rtol=0)


def test_all_ones_attention_mask_equals_no_mask(llada_tiny, forward_ref):
  tokens = forward_ref["input_ids"]
  want = llada_tiny.logits(tokens)
  np.testing.assert_allclose(llada_tiny.logits(tokens, np.ones_like(tokens)), want,
                             atol=helpers.rounding_atol(want, llada_tiny.cfg.d_model), rtol=0)


def test_rematerialised_layers_give_the_same_logits(fixture_dir, llada_tiny, forward_ref):
  remat = helpers.load(fixture_dir, remat=True)
  tokens, mask = forward_ref["input_ids_padded"], forward_ref["attention_mask"]
  want = llada_tiny.logits(tokens, mask)
  np.testing.assert_allclose(remat.logits(tokens, mask), want,
                             atol=helpers.rounding_atol(want, remat.cfg.d_model), rtol=0)


def test_bfloat16_compute_stays_close_and_returns_float32(fixture_dir, forward_ref):
  bf16 = helpers.load(fixture_dir, compute_dtype="bfloat16")
  logits = bf16.logits(forward_ref["input_ids"])
  assert logits.dtype == np.float32 and np.isfinite(logits).all()
  ref = forward_ref["logits"]
  assert np.abs(logits - ref).mean() < 0.1 * np.abs(ref).mean()
  assert (logits.argmax(-1) == ref.argmax(-1)).mean() > 0.9


# --- output positions and the shift flag -------------------------------------------------


def test_gathered_positions_equal_slices_of_the_full_logits(llada_tiny, forward_ref):
  tokens = jnp.asarray(forward_ref["input_ids"])
  positions = np.random.default_rng(0).integers(0, 40, (4, 7)).astype(np.int32)
  full = np.asarray(llada_tiny.model(tokens))
  got = np.asarray(llada_tiny.model(tokens, None, jnp.asarray(positions)))
  assert got.shape == (4, 7, llada_tiny.cfg.vocab_size)
  np.testing.assert_allclose(got, np.take_along_axis(full, positions[..., None], 1),
                             atol=helpers.rounding_atol(full, llada_tiny.cfg.d_model), rtol=0)


def test_shift_logits_flag_shifts_predictions_by_one(fixture_dir, llada_tiny, forward_ref):
  shifted = helpers.load(fixture_dir, shift_logits=True)
  tokens = forward_ref["input_ids"]
  base, got = llada_tiny.logits(tokens), shifted.logits(tokens)
  # Same numbers up to matmul blocking (the output layer sees a reordered input; measured
  # here: 7 eps32 * max|logit|).
  atol = helpers.rounding_atol(base, shifted.cfg.d_model)
  np.testing.assert_allclose(got[:, 1:], base[:, :-1], atol=atol, rtol=0)
  np.testing.assert_allclose(got[:, 0], base[:, 0], atol=atol, rtol=0)
  positions = jnp.asarray([[0, 5, 39]] * 4, jnp.int32)
  gathered = np.asarray(shifted.model(jnp.asarray(tokens), None, positions))
  np.testing.assert_allclose(gathered, got[:, [0, 5, 39]], atol=atol, rtol=0)


def test_sequences_longer_than_max_seq_len_are_refused():
  graphdef, params, _ = _build(_small_cfg(max_seq_len=16), seed=0)
  model = nnx.merge(graphdef, params)
  with pytest.raises(ValueError, match="max_seq_len=16"):
    model(np.zeros((1, 17), np.int32))


# --- shapes without allocation, parameter count, metadata -----------------------------


def test_llada_8b_has_8b_parameters_without_allocating():
  cfg = mc.preset("llada_8b")
  _, abstract = abstract_model(cfg)
  leaves = jax.tree.leaves(abstract)
  assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
  assert {x.dtype for x in leaves} == {jnp.dtype(jnp.bfloat16)}
  total = sum(int(np.prod(x.shape)) for x in leaves)
  assert total == cfg.num_params()
  assert abs(total - 8.02e9) / 8.02e9 < 0.01


@pytest.mark.parametrize("overrides", [{}, dict(n_kv_heads=2, head_dim=8),
                                       dict(n_heads=2, n_kv_heads=1, mlp_hidden=40)])
def test_num_params_counts_every_allocated_weight(overrides):
  cfg = _small_cfg(**overrides)
  leaves = jax.tree.leaves(nnx.state(init_model(cfg), nnx.Param))
  assert sum(x.size for x in leaves) == cfg.num_params()


def test_every_param_names_one_logical_axis_per_dimension(llada_tiny):
  big = mc.preset("llada_8b")
  for state, cfg in ((nnx.state(llada_tiny.model, nnx.Param), llada_tiny.cfg),
                     (abstract_model(big)[1], big)):
    flat = list(nnx.to_flat_state(state))
    assert len(flat) == 3 + 9 * cfg.n_layers  # wte, ln_f, ff_out + 9 per block
    for path, var in flat:
      assert isinstance(var, nnx.Param), path
      axes = var.get_metadata().get("logical_axes")
      assert isinstance(axes, tuple) and len(axes) == len(var.shape), (path, axes, var.shape)
      assert all(isinstance(a, str) and a for a in axes), (path, axes)


# --- config validation ------------------------------------------------------------------


@pytest.mark.parametrize("overrides, field", [
    (dict(d_model=100, n_heads=3), "d_model"),
    (dict(n_heads=4, n_kv_heads=3), "n_kv_heads"),
    (dict(param_dtype="float64"), "param_dtype"),
    (dict(compute_dtype="fp8"), "compute_dtype"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(n_layers=-1), "n_layers"),
    (dict(head_dim=-2), "head_dim"),
])
def test_invalid_model_config_raises_naming_the_field(overrides, field):
  with pytest.raises(ValueError, match=field):
    _small_cfg(**overrides)


def test_unknown_preset_name_raises():
  with pytest.raises(ValueError, match="no_such_model"):
    mc.preset("no_such_model")


def test_unknown_key_to_replace_raises_naming_it():
  with pytest.raises(ValueError, match="d_modle"):
    mc.replace(mc.preset("tiny"), d_modle=32)
  with pytest.raises(ValueError, match="n_head"):
    mc.preset("tiny", n_head=2)


def test_presets_and_replace_keep_configs_frozen():
  cfg = mc.preset("tiny", vocab_size=300)
  assert cfg.vocab_size == 300 and mc.PRESETS["tiny"].vocab_size == 512
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.vocab_size = 1  # type: ignore[misc]
