"""HF LLaDA checkpoints: loading the fixture, strict checks, lossless save/load."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from models import config as mc
from models import hf_config
from models.checkpoints import (INDEX_FILE, SINGLE_FILE, load_hf_state, load_model, save_hf,
                                weight_files)

PRE = "model.transformer."


@pytest.fixture(scope="module")
def fixture_tensors(fixture_dir) -> dict[str, np.ndarray]:
  return load_file(str(fixture_dir / SINGLE_FILE))


def _write_checkpoint(path, fixture_dir, tensors, **config_changes):
  path.mkdir(parents=True, exist_ok=True)
  hf = json.loads((fixture_dir / "config.json").read_text())
  hf.update(config_changes)
  (path / "config.json").write_text(json.dumps(hf))
  if tensors is not None:
    save_file(tensors, str(path / SINGLE_FILE), metadata={"format": "pt"})
  return path


def _flat(state) -> dict:
  return {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(state)}


def _assert_bitwise_equal(a: dict, b: dict):
  assert a.keys() == b.keys()
  for k in a:
    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
    np.testing.assert_array_equal(a[k].view(np.uint8), b[k].view(np.uint8), err_msg=str(k))


# --- the fixture -------------------------------------------------------------------------


def test_fixture_checkpoint_loads_with_its_config_and_special_ids(llada_tiny):
  cfg, ids = llada_tiny.cfg, llada_tiny.ids
  assert (cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads,
          cfg.mlp_hidden, cfg.max_seq_len) == (288, 64, 2, 4, 4, 160, 256)
  assert cfg.rope_theta == 500000.0 and cfg.norm_eps == 1e-5
  assert not cfg.causal and not cfg.shift_logits
  assert (ids.mask, ids.eos, ids.pad) == (287, 286, 285)


def test_fixture_weights_land_transposed_in_the_right_places(llada_tiny, fixture_tensors):
  m = llada_tiny.model
  pairs = {
      "wte.weight": (m.wte, False), "ln_f.weight": (m.ln_f.weight, False),
      "ff_out.weight": (m.ff_out.kernel, True),
      "blocks.1.q_proj.weight": (m.blocks[1].attn.q_proj.kernel, True),
      "blocks.1.k_proj.weight": (m.blocks[1].attn.k_proj.kernel, True),
      "blocks.0.attn_out.weight": (m.blocks[0].attn.attn_out.kernel, True),
      "blocks.0.ff_proj.weight": (m.blocks[0].ff_proj.kernel, True),
      "blocks.0.up_proj.weight": (m.blocks[0].up_proj.kernel, True),
      "blocks.1.ff_norm.weight": (m.blocks[1].ff_norm.weight, False),
  }
  for name, (param, transpose) in pairs.items():
    want = fixture_tensors[PRE + name]
    np.testing.assert_array_equal(np.asarray(param[...]), want.T if transpose else want,
                                  err_msg=name)


# --- strict loading ------------------------------------------------------------------------


def test_missing_tensor_is_reported_with_name_and_shape(tmp_path, fixture_dir, fixture_tensors):
  tensors = dict(fixture_tensors)
  del tensors[PRE + "blocks.1.v_proj.weight"]
  ckpt = _write_checkpoint(tmp_path / "ck", fixture_dir, tensors)
  with pytest.raises(ValueError, match=r"missing weight model\.transformer\.blocks\.1\.v_proj"
                     r"\.weight \(expected shape \(64, 64\)\)"):
    load_model(ckpt)


@pytest.mark.parametrize("name, value, message", [
    ("blocks.0.q_proj.bias", np.zeros(64, np.float32),  # a weight the model does not have
     r"unexpected weight model\.transformer\.blocks\.0\.q_proj\.bias with shape \(64,\)"),
    ("blocks.0.up_proj.weight", np.zeros((64, 160), np.float32),  # transposed
     r"blocks\.0\.up_proj\.weight has shape \(64, 160\), expected \(160, 64\)"),
], ids=["unexpected", "misshaped"])
def test_an_unexpected_or_misshaped_tensor_is_named_with_its_shapes(
    tmp_path, fixture_dir, fixture_tensors, name, value, message):
  tensors = dict(fixture_tensors)
  tensors[PRE + name] = value
  ckpt = _write_checkpoint(tmp_path / "ck", fixture_dir, tensors)
  with pytest.raises(ValueError, match=message):
    load_model(ckpt)


def test_all_checkpoint_problems_are_listed_together(tmp_path, fixture_dir, fixture_tensors):
  tensors = dict(fixture_tensors)
  del tensors[PRE + "ln_f.weight"]
  del tensors[PRE + "blocks.0.attn_norm.weight"]
  tensors[PRE + "extra.weight"] = np.zeros((2, 3), np.float32)
  tensors[PRE + "wte.weight"] = np.zeros((287, 64), np.float32)
  ckpt = _write_checkpoint(tmp_path / "ck", fixture_dir, tensors)
  with pytest.raises(ValueError) as err:
    load_model(ckpt)
  msg = str(err.value)
  for part in ("missing weight model.transformer.ln_f.weight (expected shape (64,))",
               "missing weight model.transformer.blocks.0.attn_norm.weight",
               "unexpected weight model.transformer.extra.weight with shape (2, 3)",
               "weight model.transformer.wte.weight has shape (287, 64), expected (288, 64)"):
    assert part in msg, (part, msg)


def test_config_with_more_layers_than_the_tensors_is_reported(tmp_path, fixture_dir,
                                                              fixture_tensors):
  ckpt = _write_checkpoint(tmp_path / "ck", fixture_dir, fixture_tensors, n_layers=3)
  with pytest.raises(ValueError) as err:
    load_model(ckpt)
  msg = str(err.value)
  for n in ("attn_norm", "ff_norm", "q_proj", "k_proj", "v_proj", "attn_out", "ff_proj",
            "up_proj", "ff_out"):
    assert f"missing weight model.transformer.blocks.2.{n}.weight" in msg, (n, msg)
  assert "blocks.1." not in msg


def test_config_with_a_different_width_is_reported(tmp_path, fixture_dir, fixture_tensors):
  ckpt = _write_checkpoint(tmp_path / "ck", fixture_dir, fixture_tensors, mlp_hidden_size=128)
  with pytest.raises(ValueError, match=r"blocks\.0\.ff_proj\.weight has shape \(160, 64\), "
                     r"expected \(128, 64\)"):
    load_model(ckpt)


@pytest.mark.parametrize("option, value", [
    ("alibi", True), ("block_type", "sequential"), ("weight_tying", True),
    ("include_bias", True), ("activation_type", "gelu"), ("layer_norm_type", "default"),
    ("rope", False), ("scale_logits", True),
])
def test_unsupported_hf_options_are_refused(tmp_path, fixture_dir, option, value):
  ckpt = _write_checkpoint(tmp_path / "ck", fixture_dir, None, **{option: value})
  with pytest.raises(ValueError, match=option):
    load_model(ckpt)


def test_config_without_mask_token_id_is_refused(fixture_dir):
  hf = json.loads((fixture_dir / "config.json").read_text())
  del hf["mask_token_id"]
  with pytest.raises(ValueError, match="mask_token_id"):
    hf_config.from_hf_dict(hf)


def test_directory_without_weights_is_refused_by_name(tmp_path, fixture_dir):
  ckpt = _write_checkpoint(tmp_path / "no_weights_here", fixture_dir, None)
  with pytest.raises(ValueError, match="no_weights_here.*neither"):
    load_model(ckpt)


def test_directory_without_config_is_refused_by_name(tmp_path):
  with pytest.raises(ValueError, match="config.json"):
    load_model(tmp_path)


def test_index_listing_a_missing_shard_is_refused(tmp_path, fixture_dir):
  ckpt = _write_checkpoint(tmp_path / "ck", fixture_dir, None)
  (ckpt / INDEX_FILE).write_text(json.dumps(
      {"weight_map": {PRE + "wte.weight": "model-00001-of-00002.safetensors"}}))
  with pytest.raises(ValueError, match="model-00001-of-00002.safetensors"):
    load_model(ckpt)


def test_save_then_load_is_bitwise_lossless_in_one_file(tmp_path, llada_tiny, fixture_tensors):
  state = nnx.state(llada_tiny.model)
  save_hf(tmp_path, state, llada_tiny.cfg, llada_tiny.ids)
  assert (tmp_path / SINGLE_FILE).is_file() and not (tmp_path / INDEX_FILE).exists()
  # Same names, layout and bits as the reference file that was loaded.
  _assert_bitwise_equal(load_file(str(tmp_path / SINGLE_FILE)), fixture_tensors)
  model, cfg, ids = load_model(tmp_path)
  assert (cfg, ids) == (llada_tiny.cfg, llada_tiny.ids)
  _assert_bitwise_equal(_flat(nnx.state(model)), _flat(state))


def test_save_then_load_is_bitwise_lossless_when_sharded(tmp_path, llada_tiny):
  state = nnx.state(llada_tiny.model)
  save_hf(tmp_path, state, llada_tiny.cfg, llada_tiny.ids, max_shard_bytes=100_000)
  shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
  assert len(shards) > 2 and not (tmp_path / SINGLE_FILE).exists()
  assert all(s.endswith(f"-of-{len(shards):05d}.safetensors") for s in shards)
  index = json.loads((tmp_path / INDEX_FILE).read_text())
  assert set(index["weight_map"].values()) == set(shards)
  assert len(index["weight_map"]) == 3 + 9 * llada_tiny.cfg.n_layers
  tensors = {}
  for s in shards:
    part = load_file(str(tmp_path / s))
    assert sum(a.nbytes for a in part.values()) <= 100_000 or len(part) == 1
    tensors.update(part)
  assert index["metadata"]["total_size"] == sum(a.nbytes for a in tensors.values())
  assert set(weight_files(tmp_path)) == set(tensors)
  model, _, _ = load_model(tmp_path)
  _assert_bitwise_equal(_flat(nnx.state(model)), _flat(state))


def test_resaving_as_one_file_removes_a_stale_index(tmp_path, llada_tiny):
  state = nnx.state(llada_tiny.model)
  save_hf(tmp_path, state, llada_tiny.cfg, llada_tiny.ids, max_shard_bytes=100_000)
  save_hf(tmp_path, state, llada_tiny.cfg, llada_tiny.ids)
  assert not (tmp_path / INDEX_FILE).exists() and (tmp_path / SINGLE_FILE).is_file()
  assert not list(tmp_path.glob("*.tmp"))
  model, _, _ = load_model(tmp_path)
  _assert_bitwise_equal(_flat(nnx.state(model)), _flat(state))


def test_bfloat16_weights_round_trip_bitwise(tmp_path, llada_tiny):
  cfg = mc.replace(llada_tiny.cfg, param_dtype="bfloat16")
  state = jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(llada_tiny.model))
  save_hf(tmp_path, state, cfg, llada_tiny.ids)
  model, loaded_cfg, _ = load_model(tmp_path, param_dtype="bfloat16")
  assert loaded_cfg == cfg
  _assert_bitwise_equal(_flat(nnx.state(model)), _flat(state))


def test_config_json_round_trip_keeps_shapes_and_ids():
  cfg = mc.preset("tiny", vocab_size=300, n_kv_heads=2, head_dim=48, rope_theta=10000.0,
                  norm_eps=1e-6, causal=True, shift_logits=True, max_seq_len=128)
  ids = mc.SpecialIds(mask=299, eos=298, pad=297, bos=1)
  written = json.loads(json.dumps(hf_config.to_hf_dict(cfg, ids)))  # as a file holds it
  assert hf_config.from_hf_dict(written) == (cfg, ids)


def test_config_json_round_trip_keeps_the_param_dtype():
  cfg = mc.preset("tiny", param_dtype="bfloat16")
  ids = mc.SpecialIds(mask=511, eos=510, pad=509)
  assert hf_config.from_hf_dict(hf_config.to_hf_dict(cfg, ids))[0].param_dtype == "bfloat16"


def test_loader_places_each_weight_on_the_requested_sharding(fixture_dir, llada_tiny):
  devices = jax.devices()
  assert len(devices) >= 2, "conftest asks for 8 host devices"
  target = jax.sharding.SingleDeviceSharding(devices[1])
  seen = []

  def sharding_of(path):
    seen.append(path)
    return target

  _, state = load_hf_state(fixture_dir, llada_tiny.cfg, sharding_of=sharding_of)
  assert len(seen) == 3 + 9 * llada_tiny.cfg.n_layers
  for _, var in nnx.to_flat_state(state):
    assert var[...].sharding == target and var[...].dtype == jnp.float32
  _assert_bitwise_equal(_flat(state), _flat(nnx.state(llada_tiny.model)))

