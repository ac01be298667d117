"""Dream and LLaDA-MoE networks: parity with their reference code (tests/fixtures/dream_tiny,
lladamoe_tiny), the family conventions (shifted logits, padding positions, the router),
and their checkpoints (strict names, HF <-> Orbax, bfloat16 storage)."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

import helpers
from models import config as mc
from models import hf_config
from models.checkpoints import INDEX_FILE, SINGLE_FILE, load_model, save_hf
from models.convert import convert
from models.moe import routing_weights
from models.transformer import abstract_model, init_model

ATOL = 1e-4  # as for the LLaDA fixture (its README, "Recommended tolerances")


def _forward(d):
  with np.load(d / "forward.npz") as z:
    return dict(z)


def _raw_logits(loaded, tokens, mask=None):
  """The network's own output at each position, before Dream's shift."""
  model = loaded.model
  hidden = model.hidden(jnp.asarray(tokens), None if mask is None else jnp.asarray(mask))
  return np.asarray(model.logits_from_hidden(hidden))


def _close(ours, ref):
  # the fixtures' logits are O(10), as the LLaDA fixture's: 1e-4 is ~1e-5 relative
  assert np.abs(ref).max() < 30
  np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)


# --- parity --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["dream", "lladamoe"])
def test_logits_match_the_reference_without_padding(family, request):
  loaded = request.getfixturevalue(f"{family}_tiny")
  ref = _forward(request.getfixturevalue(f"{family}_dir"))
  _close(_raw_logits(loaded, ref["tokens"]), ref["logits"])


@pytest.mark.parametrize("family", ["dream", "lladamoe"])
def test_left_padded_logits_match_the_reference_at_real_positions(family, request):
  loaded = request.getfixturevalue(f"{family}_tiny")
  ref = _forward(request.getfixturevalue(f"{family}_dir"))
  mask = ref["attention_mask"]
  assert (mask == 0).any()
  real = mask.astype(bool)
  ours = _raw_logits(loaded, ref["padded_tokens"], mask)
  _close(ours[real], ref["padded_logits"][real])


def test_dream_predicts_position_i_from_the_output_at_i_minus_1(dream_tiny, dream_dir):
  ref = _forward(dream_dir)
  shifted = np.concatenate([ref["logits"][:, :1], ref["logits"][:, :-1]], axis=1)
  _close(dream_tiny.logits(ref["tokens"]), shifted)


def test_lladamoe_logits_are_not_shifted(lladamoe_tiny, lladamoe_dir):
  ref = _forward(lladamoe_dir)
  _close(lladamoe_tiny.logits(ref["tokens"]), ref["logits"])


# --- padding conventions ------------------------------------------------------------------


def test_dream_positions_count_real_tokens_and_llada_moe_positions_count_columns(
    dream_tiny, lladamoe_tiny):
  mask = jnp.asarray([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
  np.testing.assert_array_equal(dream_tiny.model.positions(mask, 5),
                                [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])
  np.testing.assert_array_equal(lladamoe_tiny.model.positions(mask, 5), [[0, 1, 2, 3, 4]])
  np.testing.assert_array_equal(dream_tiny.model.positions(None, 3), [[0, 1, 2]])


@pytest.mark.parametrize("family", ["dream", "lladamoe"])
def test_a_left_padded_row_predicts_as_the_row_alone(family, request):
  loaded = request.getfixturevalue(f"{family}_tiny")
  ref = _forward(request.getfixturevalue(f"{family}_dir"))
  row = ref["tokens"][0, 9:]
  padded = np.concatenate([np.full(9, loaded.ids.pad), row])[None]
  mask = (np.arange(40) >= 9).astype(np.int32)[None]
  alone = loaded.logits(row[None])[0]
  with_pad = loaded.logits(padded, mask)[0, 9:]
  np.testing.assert_allclose(with_pad[1:], alone[1:], atol=ATOL, rtol=0)


# --- the router and the experts ----------------------------------------------------------


def test_router_keeps_the_top_k_softmax_probabilities_without_renormalising():
  logits = jnp.asarray([[[2.0, 1.0, 0.0, -1.0]]])
  weights = np.asarray(routing_weights(logits, 2))[0, 0]
  probs = np.exp([2.0, 1.0, 0.0, -1.0]) / np.exp([2.0, 1.0, 0.0, -1.0]).sum()
  np.testing.assert_allclose(weights, [probs[0], probs[1], 0.0, 0.0], rtol=1e-6)
  assert weights.sum() < 0.99  # not renormalised to one


def test_experts_equal_a_per_token_loop_over_the_chosen_experts(lladamoe_tiny):
  moe = lladamoe_tiny.model.blocks[0].moe
  x = np.random.default_rng(0).normal(size=(2, 5, lladamoe_tiny.cfg.d_model)).astype(np.float32)
  got = np.asarray(moe(jnp.asarray(x)))
  router, gate, up, down = (np.asarray(p[...], np.float64)
                            for p in (moe.router, moe.gate, moe.up, moe.down))
  want = np.zeros_like(x, np.float64)
  for b in range(2):
    for t in range(5):
      logits = x[b, t] @ router
      p = np.exp(logits - logits.max())
      p /= p.sum()
      for e in np.argsort(-p)[:moe.top_k]:
        g, u = x[b, t] @ gate[e], x[b, t] @ up[e]
        want[b, t] += p[e] * ((g / (1 + np.exp(-g)) * u) @ down[e])
  np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())


def test_dense_layers_of_an_moe_model_use_the_dense_mlp():
  cfg = mc.preset("tiny_lladamoe", n_layers=3, dense_layers=(0, 2))
  model = init_model(cfg)
  kinds = [(b.moe is None, b.ff_proj is None) for b in model.blocks]
  assert kinds == [(True, False), (False, True), (True, False)]
  assert model.blocks[0].ff_proj.kernel.shape == (cfg.d_model, cfg.mlp_hidden)
  assert model.blocks[1].moe.gate.shape == (cfg.n_experts, cfg.d_model, cfg.expert_hidden)


@pytest.mark.parametrize("name", ["tiny_dream", "tiny_lladamoe"])
def test_num_params_and_active_params_count_the_allocated_weights(name):
  cfg = mc.preset(name)
  leaves = jax.tree.leaves(nnx.state(init_model(cfg), nnx.Param))
  assert sum(x.size for x in leaves) == cfg.num_params()
  experts = sum(x.size for x in leaves if x.ndim == 3)
  assert cfg.active_params() == cfg.num_params() - experts * (
      1 - cfg.experts_per_token / cfg.n_experts) if cfg.n_experts else cfg.num_params()


def test_the_7b_presets_have_their_published_sizes_without_allocating():
  dream, moe = mc.preset("dream_7b"), mc.preset("llada_moe_7b")
  for cfg in (dream, moe):
    total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_model(cfg)[1]))
    assert total == cfg.num_params()
  assert abs(dream.num_params() - 7.62e9) / 7.62e9 < 0.01  # Qwen2.5-7B's 7.62B
  assert abs(moe.num_params() - 7.36e9) / 7.36e9 < 0.01
  # "A1B": about one billion active weights besides the embeddings and output layer
  embeddings = 2 * moe.vocab_size * moe.d_model
  assert 1.0e9 < moe.active_params() - embeddings < 1.1e9
  dense = moe.flops_per_token(1, 0.0)  # per token, active experts, no attention/output
  assert dense == pytest.approx(2 * (moe.active_params() - embeddings - moe.d_model
                                     - 16 * (2 * 2048 + 2 * 128)) + 16 * 2 * 2 * 2048, rel=1e-9)


@pytest.mark.parametrize("overrides, field", [
    (dict(n_experts=4, experts_per_token=5, expert_hidden=8), "experts_per_token"),
    (dict(n_experts=4, experts_per_token=2, expert_hidden=0), "expert_hidden"),
    (dict(n_experts=4, experts_per_token=2, expert_hidden=8, dense_layers=(7,)),
     "dense_layers"),
    (dict(experts_per_token=2), "n_experts"),
    (dict(family="qwen"), "family"),
    (dict(family="dream"), "qkv_bias"),
    (dict(qkv_bias=True), "qkv_bias"),
    (dict(family="lladamoe"), "n_experts"),
    (dict(n_experts=4, experts_per_token=2, expert_hidden=8), "n_experts"),
])
def test_invalid_family_settings_raise_naming_the_field(overrides, field):
  with pytest.raises(ValueError, match=field):
    mc.preset("tiny", **overrides)


# --- checkpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["dream", "lladamoe"])
def test_saving_the_fixture_rewrites_its_tensors_and_config_exactly(family, request, tmp_path):
  loaded = request.getfixturevalue(f"{family}_tiny")
  src = request.getfixturevalue(f"{family}_dir")
  save_hf(tmp_path, nnx.state(loaded.model, nnx.Param), loaded.cfg, loaded.ids)
  ours, theirs = load_file(str(tmp_path / SINGLE_FILE)), load_file(str(src / SINGLE_FILE))
  assert ours.keys() == theirs.keys()
  for name in theirs:
    np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
  cfg, ids = hf_config.load_hf_config(tmp_path)
  assert (cfg, ids) == (loaded.cfg, loaded.ids)
  written, original = (json.loads((d / "config.json").read_text()) for d in (tmp_path, src))
  for key in ("model_type", "hidden_size", "num_key_value_heads", "rope_theta",
              "mask_token_id", "moe_layer_freq", "num_experts_per_tok"):
    assert written.get(key) == original.get(key), key


def test_a_sharded_moe_checkpoint_with_an_index_loads_back_bitwise(lladamoe_tiny, tmp_path):
  state = nnx.state(lladamoe_tiny.model, nnx.Param)
  save_hf(tmp_path, state, lladamoe_tiny.cfg, lladamoe_tiny.ids, max_shard_bytes=60_000)
  index = json.loads((tmp_path / INDEX_FILE).read_text())
  assert len(set(index["weight_map"].values())) > 3 and not (tmp_path / SINGLE_FILE).exists()
  again, _, _ = load_model(tmp_path)
  for (path, a), (_, b) in zip(nnx.to_flat_state(state),
                               nnx.to_flat_state(nnx.state(again, nnx.Param))):
    np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]), err_msg=str(path))


def test_a_missing_expert_tensor_is_reported_by_name(lladamoe_dir, tmp_path):
  tensors = load_file(str(lladamoe_dir / SINGLE_FILE))
  del tensors["model.layers.1.mlp.experts.5.up_proj.weight"]
  shutil.copy(lladamoe_dir / "config.json", tmp_path / "config.json")
  save_file(tensors, str(tmp_path / SINGLE_FILE), metadata={"format": "pt"})
  with pytest.raises(ValueError, match=r"missing weight model\.layers\.1\.mlp\.experts\.5\."
                                       r"up_proj\.weight \(expected shape \(32, 64\)\)"):
    load_model(tmp_path)


@pytest.mark.parametrize("family, key, value", [
    ("lladamoe", "moe_router_score_function", "sigmoid"),
    ("lladamoe", "shared_expert_intermediate_size", 64),
    ("lladamoe", "moe_layer_freq", [1]),
    ("lladamoe", "clip_qkv", 8.0),
    ("dream", "use_sliding_window", True),
    ("dream", "tie_word_embeddings", True),
    ("dream", "model_type", "qwen2"),
])
def test_unsupported_config_options_are_refused_by_name(family, key, value, request, tmp_path):
  src = request.getfixturevalue(f"{family}_dir")
  hf = json.loads((src / "config.json").read_text())
  hf[key] = value
  (tmp_path / "config.json").write_text(json.dumps(hf))
  with pytest.raises(ValueError, match=key):
    hf_config.load_hf_config(tmp_path)


@pytest.mark.parametrize("family", ["dream", "lladamoe"])
def test_hf_to_orbax_to_hf_keeps_every_tensor_and_the_logits(family, request, tmp_path):
  loaded = request.getfixturevalue(f"{family}_tiny")
  src = request.getfixturevalue(f"{family}_dir")
  orbax = convert(src, tmp_path / "orbax")
  back = convert(orbax, tmp_path / "hf")
  ours, theirs = load_file(str(back / SINGLE_FILE)), load_file(str(src / SINGLE_FILE))
  assert ours.keys() == theirs.keys()
  for name in theirs:
    np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
  tokens = _forward(src)["tokens"]
  np.testing.assert_array_equal(helpers.load(orbax).logits(tokens), loaded.logits(tokens))


@pytest.mark.parametrize("family", ["dream", "lladamoe"])
def test_bfloat16_storage_halves_the_weights_and_stays_close(family, request, tmp_path):
  loaded = request.getfixturevalue(f"{family}_tiny")
  src = request.getfixturevalue(f"{family}_dir")
  dst = convert(src, tmp_path / "bf16", dtype="bfloat16")
  assert json.loads((dst / "config.json").read_text())["torch_dtype"] == "bfloat16"
  assert (dst / SINGLE_FILE).stat().st_size < 0.55 * (src / SINGLE_FILE).stat().st_size
  bf16 = helpers.load(dst)
  assert bf16.cfg.param_dtype == "bfloat16"
  tokens = _forward(src)["tokens"]
  ref = loaded.logits(tokens)
  diff = np.abs(bf16.logits(tokens) - ref).max()
  assert 0 < diff < 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("preset, family", [("dream_7b", "Dream"), ("llada_moe_7b", "LLaDA-MoE")])
def test_a_head_dim_the_family_config_cannot_hold_is_refused_on_export(preset, family):
  cfg = mc.preset(preset)
  cfg = mc.replace(cfg, head_dim=cfg.d_model // cfg.n_heads * 2)
  with pytest.raises(ValueError, match=f"model.head_dim=.*{family} checkpoints derive"):
    hf_config.to_hf_dict(cfg, mc.SpecialIds(mask=1, eos=2, pad=3))
