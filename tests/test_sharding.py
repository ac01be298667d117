"""One code path on any mesh: the sampler, the search and the train step on 8 fake CPU
devices give the single-device results; bad meshes and batches are refused by name."""

import jax
import numpy as np
import pytest
from flax import nnx

import multihost_worker as mw
from models.checkpoints import load_hf_state
from models.config import preset
from models.sharding import (MeshConfig, make_mesh, parse_mesh, shard_batch, spec_for,
                             tree_shardings)
from models.transformer import ModelApply, init_model
from mro.sampling.sampler import generate
from mro.sampling.schedule import SamplerConfig
from mro.method.search.mro_search import Scoring, run_search
from mro.method.search.settings import SearchConfig
from rewards.combine import RewardConfig

MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2)]


def _prompts(n=8, width=10, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, 250, (n, width)).astype(np.int32)
  mask = np.ones_like(tokens)
  mask[::3, :4] = 0  # left padding on some rows
  return tokens, mask


@pytest.fixture(scope="module")
def single_device_generation(llada_tiny):
  tokens, mask = _prompts()
  scfg = SamplerConfig(gen_length=32, steps=16, block_length=16)
  return scfg, llada_tiny.generate(tokens, scfg, prompt_mask_BP=mask)


@pytest.mark.parametrize("shape", MESHES)
def test_sampler_tokens_on_a_mesh_equal_the_single_device_tokens(llada_tiny,
                                                                 single_device_generation,
                                                                 shape):
  scfg, ref = single_device_generation
  tokens, mask = _prompts()
  mesh = make_mesh(MeshConfig(*shape))
  out = llada_tiny.generate(tokens, scfg, prompt_mask_BP=mask, mesh=mesh)
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
  np.testing.assert_array_equal(np.asarray(out.commit_step), np.asarray(ref.commit_step))
  # It really ran sharded: rows split over data x fsdp.
  assert len(out.tokens.sharding.device_set) == 8
  assert out.tokens.sharding.shard_shape(out.tokens.shape)[0] == 8 // (shape[0] * shape[1])


@pytest.fixture(scope="module")
def single_device_cached_generation(llada_tiny):
  tokens, mask = _prompts()
  scfg = SamplerConfig(gen_length=32, steps=16, block_length=8, cache="dual", threshold=0.3,
                       stop_at_eos=True)
  return scfg, llada_tiny.generate(tokens, scfg, prompt_mask_BP=mask)


@pytest.mark.parametrize("shape", [(2, 2, 2)])
def test_cached_sampler_on_a_mesh_equals_the_single_device_run(llada_tiny,
                                                               single_device_cached_generation,
                                                               shape):
  """Block KV caches, rows in lockstep under the threshold rule, the EOS stop: the same
  tokens, commit steps and per-row NFE on every mesh."""
  scfg, ref = single_device_cached_generation
  tokens, mask = _prompts()
  out = llada_tiny.generate(tokens, scfg, prompt_mask_BP=mask, mesh=make_mesh(MeshConfig(*shape)))
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
  np.testing.assert_array_equal(np.asarray(out.commit_step), np.asarray(ref.commit_step))
  np.testing.assert_array_equal(np.asarray(out.nfe_per_row), np.asarray(ref.nfe_per_row))
  assert len(out.tokens.sharding.device_set) == 8


def test_search_on_a_mesh_equals_the_single_device_search():
  """At the search's temperature (0.25): Gumbel noise is per row, so mesh-invariant too."""
  small = dict(vocab_size=32, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, mlp_hidden=64,
               max_seq_len=32)
  g, p = nnx.split(init_model(preset("tiny", **small), seed=0))
  scoring = Scoring(RewardConfig(use=("tv",)), 31, 30, None)
  prompts = np.random.default_rng(0).integers(0, 29, (4, 5)).astype(np.int32)
  cfg = SamplerConfig(gen_length=8, steps=4, block_length=8)
  scfg = SearchConfig(k=2, n_live=2, group_steps=2)
  run = lambda mesh: jax.device_get(run_search(
      ModelApply(g), p, prompts, cfg, scfg, scoring, key=jax.random.key(0), mesh=mesh))
  ref, out = run(None), run(make_mesh(MeshConfig(2, 2, 2)))
  np.testing.assert_array_equal(out.tokens, ref.tokens)
  np.testing.assert_array_equal(out.commit_step, ref.commit_step)
  np.testing.assert_allclose(out.intra, ref.intra, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def single_device_step():
  return _train_once(MeshConfig())


def _train_once(mesh_cfg: MeshConfig):
  mesh = make_mesh(mesh_cfg)
  _, state, step = mw.train_setup(mesh)
  state, metrics = step(state, shard_batch(mw.fixed_batch(), mesh))
  params = {"/".join(map(str, k)): (np.asarray(jax.device_get(v[...])), v[...].sharding)
            for k, v in nnx.to_flat_state(state.params)}
  return float(metrics["loss"]), params


@pytest.mark.parametrize("shape", MESHES)
def test_train_step_on_a_mesh_matches_the_single_device_step(single_device_step, shape):
  ref_loss, ref_params = single_device_step
  loss, params = _train_once(MeshConfig(*shape))
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  for name, (value, sharding) in params.items():
    np.testing.assert_allclose(value, ref_params[name][0], rtol=1e-5, atol=1e-6,
                               err_msg=name)
  # The updated weights keep the shardings their logical axes ask for.
  q_sharding = params["blocks/0/attn/q_proj/kernel"][1]
  expected = spec_for(("embed", "heads"), (32, 32), q_sharding.mesh)
  assert q_sharding.spec == expected
  if shape == (2, 2, 2):
    assert expected == jax.sharding.PartitionSpec("fsdp", "tensor")


def test_hf_loader_places_weights_by_their_logical_axes(fixture_dir, llada_tiny):
  mesh = make_mesh(MeshConfig(2, 2, 2))
  _, state = load_hf_state(fixture_dir, llada_tiny.cfg, mesh=mesh)
  wanted = tree_shardings(state, mesh)
  for (path, var), (_, sharding) in zip(nnx.to_flat_state(state), nnx.to_flat_state(wanted)):
    assert var[...].sharding.is_equivalent_to(sharding, var[...].ndim), path
  ref = nnx.state(llada_tiny.model)
  for (path, var), (_, want) in zip(nnx.to_flat_state(state), nnx.to_flat_state(ref)):
    np.testing.assert_array_equal(np.asarray(var[...]), np.asarray(want[...]), err_msg=path)
  kernel = state["blocks"][0]["ff_proj"]["kernel"][...]  # [64, 160] on (fsdp, tensor)
  assert kernel.sharding.shard_shape(kernel.shape) == (32, 80)


@pytest.mark.parametrize("family", ["dream", "lladamoe"])
def test_family_models_load_onto_a_mesh_and_decode_like_one_device(family, request):
  """Dream (4 query / 2 KV heads over tensor) and LLaDA-MoE (8 experts over tensor): each
  weight lands on its logical-axis sharding, the experts split over `tensor`, and the
  sampler's tokens equal the single-device run."""
  loaded = request.getfixturevalue(f"{family}_tiny")
  mesh = make_mesh(MeshConfig(2, 2, 2))
  _, state = load_hf_state(request.getfixturevalue(f"{family}_dir"), loaded.cfg, mesh=mesh)
  wanted = tree_shardings(state, mesh)
  for (path, var), (_, sharding) in zip(nnx.to_flat_state(state), nnx.to_flat_state(wanted)):
    assert var[...].sharding.is_equivalent_to(sharding, var[...].ndim), path
  if family == "lladamoe":
    gate = state["blocks"][1]["moe"]["gate"][...]  # [8 experts, 64, 32]
    assert gate.sharding.spec[0] == "tensor" and gate.sharding.shard_shape(gate.shape)[0] == 4
  tokens, mask = _prompts(n=4)
  scfg = SamplerConfig(gen_length=16, steps=8, block_length=8)
  ref = loaded.generate(tokens, scfg, prompt_mask_BP=mask)
  out = generate(loaded.apply, state, tokens, scfg, mask_id=loaded.ids.mask,
                 max_seq_len=loaded.cfg.max_seq_len, prompt_mask_BP=mask, mesh=mesh)
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))


def test_a_batch_that_does_not_divide_the_data_axes_is_refused(llada_tiny):
  tokens, mask = _prompts(n=6)
  with pytest.raises(ValueError, match=r"batch size 6 is not divisible by the data-parallel "
                                       r"mesh size 4 \(data x fsdp\)"):
    llada_tiny.generate(tokens, SamplerConfig(gen_length=8, steps=8, block_length=8),
                        prompt_mask_BP=mask, mesh=make_mesh(MeshConfig(2, 2, 2)))


def test_a_train_batch_that_does_not_divide_the_data_axes_is_refused():
  batch = {k: v[:6] for k, v in mw.fixed_batch().items()}
  with pytest.raises(ValueError, match="batch size 6 is not divisible"):
    shard_batch(batch, make_mesh(MeshConfig(4, 1, 2)))


def test_a_mesh_larger_than_the_devices_is_refused():
  with pytest.raises(ValueError, match=r"needs 16 devices, but only 8 are available"):
    make_mesh(parse_mesh("data=4,fsdp=4"))
  with pytest.raises(ValueError, match=r"needs 4 devices, got 8"):
    make_mesh(MeshConfig(2, 2, 1), devices=jax.devices())


@pytest.mark.parametrize("text", ["data=0", "pipeline=2", "data=two", "fsdp"])
def test_a_bad_mesh_string_is_refused(text):
  with pytest.raises(ValueError, match="mesh"):
    parse_mesh(text)


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2)])
def test_mc_loglikelihood_on_a_mesh_equals_the_single_device_estimate(llada_tiny, shape):
  from models.sharding import place_params
  from mro.evaluation.likelihood import mc_loglikelihood
  tokens, _ = _prompts(3, 9)
  pairs = [(tokens[0].tolist(), [5, 9, 200]), (tokens[1][:4].tolist(), [17]),
           (tokens[2].tolist(), [3, 3])]
  kw = dict(mask_id=llada_tiny.ids.mask, pad_id=llada_tiny.ids.pad,
            max_seq_len=llada_tiny.cfg.max_seq_len, mc_num=12, batch_size=8, seed=2)
  ref = mc_loglikelihood(llada_tiny.apply, llada_tiny.params, pairs, **kw)
  mesh = make_mesh(MeshConfig(*shape))
  out = mc_loglikelihood(llada_tiny.apply, place_params(llada_tiny.params, mesh), pairs,
                         mesh=mesh, **kw)
  np.testing.assert_allclose([e.logprob for e in out], [e.logprob for e in ref], rtol=1e-5)
