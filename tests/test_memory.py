"""Memory options: the chunked masked-only cross-entropy (`data.loss_chunk`) and per-layer
remat (`model.remat`) give the same losses and gradients as the plain computation, and
XLA's memory analysis shows what they save."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import helpers
from models.config import ModelConfig
from models.transformer import ModelApply, init_model
from mro.training import losses
from mro.training.settings import DataConfig
from mro.sampling.sampler import generate
from mro.sampling.schedule import SamplerConfig

CFG = ModelConfig(vocab_size=512, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2,
                  mlp_hidden=64, max_seq_len=64)
MASK_ID, B, L, P = 511, 4, 40, 8


def _atol(value):
  """Chunks and remat regroup the sums over the batch's positions: rounding at the value's
  magnitude (measured here: 1 eps32 of the loss, 3 eps32 of a gradient's largest entry)."""
  return helpers.rounding_atol(value, B * L)


@pytest.fixture(scope="module")
def model():
  graphdef, params = nnx.split(init_model(CFG, seed=0))
  return ModelApply(graphdef), params


def _batch(seed=0, max_rate=0.6):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, 500, (B, L)).astype(np.int32)
  rate = rng.uniform(0.05, max_rate, (B, 1))
  mask = np.zeros((B, L), bool)
  mask[:, P:] = rng.random((B, L - P)) < rate
  mask[0, P:] = False  # a row with nothing masked
  mask[1, P] = True
  attn = np.ones((B, L), bool)
  attn[2, :3] = False
  return tokens, mask, rng.uniform(0.1, 1.0, B).astype(np.float32), attn


def _sft(apply, params, batch, chunk):
  tokens, mask, p_mask, attn = batch
  return losses.sft_loss_given_mask(apply, params, tokens, mask, p_mask,
                                    np.full(B, L - P), MASK_ID, attn, P, chunk)


def _pretrain(apply, params, batch, chunk):
  tokens, mask, p_mask, attn = batch
  return losses.mdm_loss_given_mask(apply, params, tokens, mask, p_mask, MASK_ID, attn, chunk)


@pytest.mark.parametrize("objective", [_sft, _pretrain])
def test_chunked_loss_and_gradient_equal_the_dense_ones(model, objective):
  """Chunks that do not divide the window (5 of 32 or 40) and one larger than it."""
  apply, params = model
  batch = _batch()
  grad = lambda c: jax.jit(jax.value_and_grad(lambda p: objective(apply, p, batch, c)))(params)
  dense, g_dense = grad(0)
  for chunk in (5, 1000):
    chunked, g_chunked = grad(chunk)
    np.testing.assert_allclose(chunked, dense, rtol=0, atol=_atol(dense),
                               err_msg=f"chunk {chunk}")
    for a, b in zip(jax.tree.leaves(g_chunked), jax.tree.leaves(g_dense)):
      np.testing.assert_allclose(a, b, rtol=0, atol=_atol(b), err_msg=f"chunk {chunk}")


class CountingApply:
  """ModelApply that counts, at run time, how many output-layer chunks are computed."""

  def __init__(self, apply):
    self.apply, self.calls = apply, []

  def hidden(self, params, tokens, attn):
    return self.apply.hidden(params, tokens, attn)

  def head(self, params, h_BKD):
    jax.debug.callback(lambda: self.calls.append(h_BKD.shape[1]))
    return self.apply.head(params, h_BKD)


def test_chunked_loss_skips_chunks_without_masked_positions(model):
  apply, params = model
  tokens, _, p_mask, attn = _batch()
  mask = np.zeros((B, L), bool)
  mask[:, P + 3] = mask[:, L - 1] = True  # 2 masked per row: one chunk of 4 holds them
  counting = CountingApply(apply)
  loss = losses.chunked_masked_ce(counting, params, tokens, tokens, mask, attn, P, chunk=4)
  jax.block_until_ready(loss)
  assert counting.calls == [4]  # 1 of the 8 chunks of the 32-position window
  dense = losses.weighted_masked_ce(apply, params, tokens, tokens, mask, np.ones(B), attn, P)[0]
  np.testing.assert_allclose(loss, dense, rtol=0, atol=_atol(dense))


def test_chunked_loss_needs_far_less_memory_for_logits():
  """XLA's own memory analysis of loss + gradient: with a vocabulary much larger than the
  model, the dense loss's temporaries are dominated by [B, L, V] logits."""
  cfg = ModelConfig(vocab_size=16384, d_model=16, n_layers=1, n_heads=1, n_kv_heads=1,
                    mlp_hidden=32, max_seq_len=256)
  graphdef, params = nnx.split(nnx.eval_shape(lambda: init_model(cfg)))
  apply = ModelApply(graphdef)
  tokens = jax.ShapeDtypeStruct((4, 256), jnp.int32)
  mask = jax.ShapeDtypeStruct((4, 256), bool)
  p_mask = jax.ShapeDtypeStruct((4,), jnp.float32)

  def temp_bytes(chunk):
    loss = lambda p, t, m, pm: losses.mdm_loss_given_mask(apply, p, t, m, pm, 0, None, chunk)
    compiled = jax.jit(jax.grad(loss)).lower(params, tokens, mask, p_mask).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  logits_bytes = 4 * 256 * 16384 * 4
  dense, chunked = temp_bytes(0), temp_bytes(16)
  assert dense > logits_bytes
  assert chunked < dense / 8, (dense, chunked)


def test_a_negative_loss_chunk_is_refused():
  with pytest.raises(ValueError, match="data.loss_chunk"):
    DataConfig(loss_chunk=-1)
  with pytest.raises(ValueError, match="chunk"):
    losses.make_mdm_loss(0, chunk=-2)


def test_the_chunked_loss_needs_a_model_with_hidden_and_head(model):
  _, params = model
  tokens, mask, p_mask, attn = _batch()
  with pytest.raises(ValueError, match="hidden and .head"):
    losses.chunked_masked_ce(lambda *a: None, params, tokens, tokens, mask, attn, P, 4)


# --- remat ----------------------------------------------------------------------------


def _remat_pair(**overrides):
  cfg = dict(vars(CFG), **overrides)
  make = lambda remat: nnx.split(init_model(ModelConfig(**{**cfg, "remat": remat}), 0))
  (g0, p0), (g1, _) = make(False), make(True)
  return ModelApply(g0), ModelApply(g1), p0


def test_remat_gives_the_same_loss_and_gradient_under_jit():
  plain, remat, params = _remat_pair(n_layers=2)
  batch = _batch(1)
  run = lambda apply: jax.jit(jax.value_and_grad(lambda p: _sft(apply, p, batch, 0)))(params)
  (v0, g0), (v1, g1) = run(plain), run(remat)
  np.testing.assert_allclose(v1, v0, rtol=0, atol=_atol(v0))
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    np.testing.assert_allclose(a, b, rtol=0, atol=_atol(b))


def test_remat_keeps_fewer_activations_for_the_backward_pass():
  """XLA's temporaries of loss + gradient shrink when each layer is recomputed."""
  cfg = dict(vars(CFG), n_layers=4, d_model=64, mlp_hidden=256, max_seq_len=128)
  tokens = jax.ShapeDtypeStruct((4, 128), jnp.int32)

  def temp_bytes(remat):
    graphdef, params = nnx.split(nnx.eval_shape(
        lambda: init_model(ModelConfig(**{**cfg, "remat": remat}))))
    positions = jnp.zeros((4, 1), jnp.int32)
    loss = lambda p, t: ModelApply(graphdef)(p, t, None, positions).sum()
    compiled = jax.jit(jax.grad(loss)).lower(params, tokens).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  plain, remat = temp_bytes(False), temp_bytes(True)
  assert remat < plain / 2, (plain, remat)


def test_a_remat_model_samples_like_the_plain_one():
  """Remat wraps each layer in jax.checkpoint, which must also work inside the
  sampler's lax loop (nnx.remat did not: it mutated state across trace levels)."""
  plain, remat, params = _remat_pair()
  prompts = np.random.default_rng(0).integers(0, 500, (2, 6)).astype(np.int32)
  scfg = SamplerConfig(gen_length=8, steps=4, block_length=8)
  run = lambda apply: generate(apply, params, prompts, scfg, mask_id=MASK_ID, max_seq_len=64)
  np.testing.assert_array_equal(np.asarray(run(remat).tokens), np.asarray(run(plain).tokens))
