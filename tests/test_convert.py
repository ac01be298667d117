"""Checkpoints at real scale: HF <-> Orbax conversion is lossless, sharded HF loading keeps
host memory near one tensor (measured), mismatched or damaged checkpoints are refused,
and `mro sample` runs on converted directories with an HF tokenizer.json."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open

from models import safetensors_io as st
from models.checkpoints import INDEX_FILE, load_model, save_hf, tensor_infos
from models.config import ModelConfig, SpecialIds, preset
from models.convert import convert, detect_format, side_files
from models.orbax_io import saved_dtypes
from models.sharding import MeshConfig, make_mesh, tree_shardings
from models.tokenizers import LLADA_CHAT_TEMPLATE, build_hf_tokenizer
from models.transformer import init_model
from mro import cli
def _tensors(model_dir) -> dict[str, np.ndarray]:
  return {n: info.read() for n, info in tensor_infos(model_dir).items()}


def _same_bits(a: dict, b: dict) -> None:
  assert set(a) == set(b)
  for name in a:
    assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
    assert a[name].tobytes() == b[name].tobytes(), name


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
  """A random tiny LLaDA-format model, sharded over several files, with an HF
  tokenizer.json (chat template included) and a file only other tools read."""
  d = tmp_path_factory.mktemp("hf") / "model"
  texts = [f"{a}+{b}={a + b}" for a in range(40) for b in range(0, 40, 3)]
  tok = build_hf_tokenizer(d, texts, 120, chat_template=LLADA_CHAT_TEMPLATE)
  cfg = preset("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=2,
               n_kv_heads=2, mlp_hidden=64, max_seq_len=64)
  save_hf(d, nnx.state(init_model(cfg, seed=0)), cfg, tok.special, max_shard_bytes=20_000)
  (d / "generation_config.json").write_text('{"note": "kept verbatim"}\n')
  return d


def test_hf_to_orbax_to_hf_is_lossless(tmp_path, hf_model):
  orbax_dir = convert(hf_model, tmp_path / "orbax")
  assert detect_format(orbax_dir) == "orbax" and not list(orbax_dir.glob("*.safetensors"))
  back = convert(orbax_dir, tmp_path / "hf", max_shard_bytes=50_000)
  assert detect_format(back) == "hf"
  _same_bits(_tensors(back), _tensors(hf_model))
  assert [p.name for p in side_files(back)] == [p.name for p in side_files(hf_model)]
  for f in side_files(hf_model):  # config.json, tokenizer files, generation config
    assert (back / f.name).read_bytes() == f.read_bytes(), f.name
  assert len(json.loads((back / INDEX_FILE).read_text())["weight_map"]) == 3 + 9 * 2


def test_bfloat16_weights_keep_their_dtype_and_bits(tmp_path):
  cfg = ModelConfig(vocab_size=48, d_model=16, n_layers=1, n_heads=2, n_kv_heads=2,
                    mlp_hidden=32, max_seq_len=32, param_dtype="bfloat16")
  ids = SpecialIds(mask=47, eos=46, pad=46)
  save_hf(tmp_path / "hf", nnx.state(init_model(cfg, seed=1)), cfg, ids)
  convert(tmp_path / "hf", tmp_path / "orbax")
  assert saved_dtypes(tmp_path / "orbax") == {np.dtype(ml_dtypes.bfloat16)}
  convert(tmp_path / "orbax", tmp_path / "back")
  _same_bits(_tensors(tmp_path / "back"), _tensors(tmp_path / "hf"))
  with safe_open(tmp_path / "back" / "model.safetensors", framework="numpy") as f:
    assert f.get_slice("model.transformer.wte.weight").get_dtype() == "BF16"


def test_an_orbax_model_restores_onto_a_mesh_by_logical_axes(tmp_path, hf_model):
  convert(hf_model, tmp_path / "orbax")
  mesh = make_mesh(MeshConfig(2, 2, 2))
  model, _, _ = load_model(tmp_path / "orbax", mesh=mesh)
  reference, _, _ = load_model(hf_model)
  state, wanted = nnx.state(model), tree_shardings(nnx.state(model), mesh)
  for (path, var), (_, sharding), (_, ref) in zip(nnx.to_flat_state(state),
                                                  nnx.to_flat_state(wanted),
                                                  nnx.to_flat_state(nnx.state(reference))):
    assert var[...].sharding.is_equivalent_to(sharding, var[...].ndim), path
    np.testing.assert_array_equal(np.asarray(var[...]), np.asarray(ref[...]), err_msg=path)


def test_an_orbax_model_whose_config_does_not_match_is_refused(tmp_path, hf_model):
  convert(hf_model, tmp_path / "orbax")
  config = json.loads((tmp_path / "orbax" / "config.json").read_text())
  config.update(n_layers=3, mlp_hidden_size=48)
  (tmp_path / "orbax" / "config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError) as err:
    load_model(tmp_path / "orbax")
  msg = str(err.value)
  assert "does not match config.json" in msg
  assert "missing weight blocks.2.attn.q_proj.kernel (expected shape (32, 32))" in msg
  assert "weight blocks.0.ff_proj.kernel has shape (32, 64), expected (32, 48)" in msg


def test_a_truncated_safetensors_file_is_refused_by_name(tmp_path, hf_model):
  shutil.copytree(hf_model, tmp_path / "m")
  victim = sorted((tmp_path / "m").glob("model-*.safetensors"))[0]
  victim.write_bytes(victim.read_bytes()[:-100])
  with pytest.raises(ValueError, match=f"{victim.name}.*truncated or corrupt"):
    load_model(tmp_path / "m")


def test_convert_refuses_impossible_requests(tmp_path, hf_model):
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "x").write_text("")
  with pytest.raises(ValueError, match="not an empty directory"):
    convert(hf_model, tmp_path / "full")
  with pytest.raises(ValueError, match="already in hf format"):
    convert(hf_model, tmp_path / "a", to="hf")
  with pytest.raises(ValueError, match="unknown target format"):
    convert(hf_model, tmp_path / "b", to="gguf")
  with pytest.raises(ValueError, match="no config.json"):
    convert(tmp_path / "full", tmp_path / "c")


def _cli(*argv) -> tuple[int, str, str]:
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = cli.main(list(argv))
  return code, out.getvalue(), err.getvalue()


def test_mro_convert_then_mro_sample_on_both_formats(tmp_path, hf_model):
  code, out, err = _cli("convert", str(hf_model), str(tmp_path / "orbax"))
  assert code == 0, err
  assert "wrote orbax model" in out
  sample = ["--prompt", "12+30=", "--prompt", "7+1=", "--gen-length", "8", "--steps", "4",
            "--block-length", "8"]
  code_hf, text_hf, err = _cli("sample", "--model", str(hf_model), *sample)
  assert code_hf == 0, err
  code_ox, text_ox, err = _cli("sample", "--model", str(tmp_path / "orbax"), *sample)
  assert code_ox == 0, err
  assert text_ox == text_hf and len(text_hf.splitlines()) == 2
  code, _, err = _cli("convert", str(hf_model), str(tmp_path / "x"), "--max-shard-size", "lots")
  assert code == 2 and "bad size 'lots'" in err


# --- host memory while loading a multi-file checkpoint ----------------------------------

PROBE = """
import json, sys
import jax, numpy as np
from models.checkpoints import load_hf_state
from models.hf_config import load_hf_config
from models.sharding import MeshConfig, make_mesh

def status(field):
  line = next(l for l in open("/proc/self/status") if l.startswith(field))
  return int(line.split()[1]) * 1024

directory, shape = sys.argv[1], sys.argv[2]
cfg, _ = load_hf_config(directory)
mesh = None if shape == "none" else make_mesh(MeshConfig(*map(int, shape.split(","))))
jax.block_until_ready(jax.device_put(np.ones(4)))
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS")
_, state = load_hf_state(directory, cfg, mesh=mesh)
leaves = jax.block_until_ready(jax.tree.leaves(state))
on_devices = sum(s.data.nbytes for x in leaves for s in x.addressable_shards)
print(json.dumps({"growth": status("VmHWM") - before, "on_devices": on_devices}))
"""


def _big_checkpoint(directory) -> int:
  """~245 MB in 6 files; the largest tensor (wte, 64 MiB) in the file read last, so its
  staging comes on top of everything already loaded. Returns its size in bytes."""
  cfg = ModelConfig(vocab_size=32768, d_model=512, n_layers=8, n_heads=8, n_kv_heads=8,
                    mlp_hidden=1536, max_seq_len=64)
  rng = np.random.default_rng(0)
  w = lambda *shape: rng.standard_normal(shape, dtype=np.float32)
  block = lambda: {"attn_norm": {"weight": w(512)}, "ff_norm": {"weight": w(512)},
                   "attn": {n: {"kernel": w(512, 512)} for n in ("q_proj", "k_proj",
                                                                  "v_proj", "attn_out")},
                   "ff_proj": {"kernel": w(512, 1536)}, "up_proj": {"kernel": w(512, 1536)},
                   "ff_out": {"kernel": w(1536, 512)}}
  state = {"wte": w(32768, 512), "ln_f": {"weight": w(512)},
           "ff_out": {"kernel": w(512, 32768)}, "blocks": {i: block() for i in range(8)}}
  save_hf(directory, state, cfg, SpecialIds(mask=32767, eos=32766, pad=32766),
          max_shard_bytes=40_000_000)
  index = json.loads((directory / INDEX_FILE).read_text())
  first = index["weight_map"]["model.transformer.wte.weight"]
  os.replace(directory / first, directory / "zz-read-last.safetensors")
  index["weight_map"] = {n: ("zz-read-last.safetensors" if f == first else f)
                         for n, f in index["weight_map"].items()}
  (directory / INDEX_FILE).write_text(json.dumps(index))
  assert len(list(directory.glob("*.safetensors"))) == 6
  return 32768 * 512 * 4


@pytest.mark.parametrize("mesh", ["none", "1,8,1"])
def test_loading_a_multi_file_checkpoint_stages_at_most_about_one_tensor(tmp_path, mesh):
  """Peak host RSS while loading = what ends up on the (CPU) devices + staging; staging
  stays below 1.5x the largest tensor (reading everything first would need 2x the model,
  ~490 MB). Measured in a fresh process with /proc/self/status after resetting VmHWM."""
  largest = _big_checkpoint(tmp_path / "big")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "big"), mesh], env=env,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  r = json.loads(done.stdout.strip().splitlines()[-1])
  staging = r["growth"] - r["on_devices"]
  print(f"mesh {mesh}: on devices {r['on_devices'] / 1e6:.1f} MB, staging "
        f"{staging / 1e6:.1f} MB = {staging / largest:.2f} x the largest tensor")
  assert r["on_devices"] >= 243_000_000
  assert staging < 1.5 * largest, (staging, largest)


def test_reading_a_slice_reads_the_right_values(tmp_path):
  data = np.arange(7 * 5, dtype=np.float32).reshape(7, 5)
  st.write_file(tmp_path / "t.safetensors", [("x", (7, 5), np.float32)], lambda _: data)
  info = st.read_header(tmp_path / "t.safetensors")["x"]
  np.testing.assert_array_equal(info.read((slice(2, 6), slice(1, 3)), block_bytes=20),
                                data[2:6, 1:3])
  got = info.read((slice(0, 2), slice(3, 7)), dtype=jnp.bfloat16, transpose=True,
                  block_bytes=1)
  assert got.dtype == jnp.bfloat16 and got.flags.c_contiguous
  np.testing.assert_array_equal(got.astype(np.float32), data.T[0:2, 3:7])
  assert jax.numpy.asarray(got).shape == (2, 4)


def test_text_sampling_of_an_orbax_model_on_a_mesh_matches_one_device(tmp_path, hf_model):
  from mro.sampling.schedule import SamplerConfig
  from mro.sampling.textgen import TextSampler
  from mro.loading import load_inference_model
  convert(hf_model, tmp_path / "orbax")
  scfg = SamplerConfig(gen_length=8, steps=8, block_length=8)
  prompts = ["1+2=", "30+4=", "5+6=", "7+28="]
  mesh = make_mesh(MeshConfig(2, 2, 2))
  sharded = TextSampler(*_drop_ids(load_inference_model(tmp_path / "orbax", mesh)), mesh=mesh)
  single = TextSampler(*_drop_ids(load_inference_model(hf_model)))
  assert [g.tokens for g in sharded.generate(prompts, scfg)] == \
      [g.tokens for g in single.generate(prompts, scfg)]


def _drop_ids(loaded):
  model, cfg, _, tokenizer = loaded
  return model, cfg, tokenizer


def test_a_dtype_cast_rewrites_weights_and_config_in_the_same_format(fixture_dir, tmp_path):
  from models import convert as conv
  from models.checkpoints import load_model as load
  out = conv.convert(fixture_dir, tmp_path / "bf16", dtype="bfloat16")
  assert conv.detect_format(out) == "hf" and conv.stored_dtype(out) == "bfloat16"
  assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
  model, cfg, _ = load(out)
  assert cfg.param_dtype == "bfloat16"
  ref, _, _ = load(fixture_dir)
  np.testing.assert_allclose(np.asarray(model.wte[...], np.float32),
                             np.asarray(ref.wte[...]), rtol=1e-2, atol=1e-2)
