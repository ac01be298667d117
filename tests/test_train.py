"""The train step (gradient accumulation, learning) and the training loop's record:
exact resume (in-process and after a real SIGKILL), NaN stop, workdir checks, export."""

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

import helpers
from models.config import ModelConfig
from models.sharding import MeshConfig, make_mesh
from mro import loading
from mro import config as exp_config
from mro.training import loop
from mro.training import workdir as wdlib
from mro.training.checkpointing import Checkpointer
from mro.training.settings import TrainConfig
from mro.files import read_jsonl
from mro.training.losses import sft_loss_given_mask
from mro.training.step import NonFiniteLossError, _grads, init_state, jit_train_step, make_optimizer

# --- the train step on a tiny model with a fixed (deterministic) mask ------------------

MODEL = ModelConfig(vocab_size=32, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2,
                    mlp_hidden=64, max_seq_len=32)
MASK_ID, B, P, R = 31, 8, 4, 12


def fixed_batch(seed=0):
  """Random tokens with a fixed mask and p_mask (stored [B, L] like every batch entry)."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, 30, (B, P + R)).astype(np.int32)
  attn = np.ones((B, P + R), bool)
  attn[::2, :2] = False  # left padding on even rows
  eligible = np.zeros((B, P + R), bool)
  eligible[:, P:] = True
  eligible[1, -3:] = False  # rows differ in response length
  mask = eligible & (rng.random((B, P + R)) < 0.5)
  mask[:, P] = True
  p_mask = np.repeat(rng.uniform(0.2, 1.0, (B, 1)), P + R, 1).astype(np.float32)
  return {"tokens": tokens, "attn_mask": attn, "eligible": eligible, "mask": mask,
          "p_mask": p_mask}


def fixed_mask_loss(apply, params, batch, key):
  """The SFT loss for the batch's own mask: ignores `key`, so it is deterministic."""
  del key
  loss = sft_loss_given_mask(apply, params, batch["tokens"], batch["mask"],
                             batch["p_mask"][:, 0], batch["eligible"].sum(1), MASK_ID,
                             batch["attn_mask"], resp_start=P)
  return loss, {"masked_tokens": batch["mask"].sum(), "tokens": batch["attn_mask"].sum()}


def half(batch, i):
  return {k: v[i * B // 2:(i + 1) * B // 2] for k, v in batch.items()}


@pytest.fixture(scope="module")
def mesh():
  return make_mesh(MeshConfig())


def train_cfg(grad_accum=1):
  return TrainConfig(steps=50, batch_size=B, grad_accum=grad_accum, lr=1e-2, warmup_steps=1)


@pytest.fixture(scope="module")
def tiny(mesh):
  """(apply, initial state, shardings, optimizer) of the tiny model, built once."""
  optimizer = make_optimizer(train_cfg())
  apply, state, shardings = init_state(MODEL, optimizer, seed=0, mesh=mesh)
  return apply, state, shardings, optimizer


@pytest.fixture(scope="module")
def step_fns(tiny, mesh):
  """grad_accum -> the compiled step for the fixed-mask loss."""
  apply, _, shardings, optimizer = tiny
  return {a: jit_train_step(apply, fixed_mask_loss, optimizer, train_cfg(a), shardings, mesh)
          for a in (1, 2)}


def fresh_state(tiny):
  """A copy of the initial state (the compiled step donates its input)."""
  return jax.tree.map(jnp.copy, tiny[1])


def tree_allclose(a, b, atol_of):
  """Leaf by leaf, with `atol_of(leaf of b)` as the absolute tolerance."""
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol_of(y))


def gradient_atol(leaf):
  """Rounding of a sum over the batch's B * (P + R) positions, at the leaf's magnitude."""
  return helpers.rounding_atol(leaf, B * (P + R))


def test_accumulated_gradient_is_the_average_of_the_micro_batch_gradients(tiny):
  apply, state = tiny[0], tiny[1]
  grads = jax.jit(_grads, static_argnums=(0, 1, 5))
  batch = jax.tree.map(jnp.asarray, fixed_batch())
  key = jax.random.key(0)
  loss2, g2, aux2 = grads(apply, fixed_mask_loss, state.params, batch, key, 2)
  parts = [grads(apply, fixed_mask_loss, state.params, half(batch, i), key, 1) for i in (0, 1)]
  want = jax.tree.map(lambda a, b: (a + b) / 2, parts[0][1], parts[1][1])
  tree_allclose(g2, want, gradient_atol)
  np.testing.assert_allclose(float(loss2), (float(parts[0][0]) + float(parts[1][0])) / 2,
                             rtol=1e-6)
  # counts add up over micro-batches
  assert int(aux2["tokens"]) == int(parts[0][2]["tokens"]) + int(parts[1][2]["tokens"])


def test_jitted_steps_with_grad_accum_2_equal_steps_on_the_whole_batch(tiny, step_fns):
  batch = fixed_batch()
  results = []
  for accum in (1, 2):
    state = fresh_state(tiny)
    state, m_first = step_fns[accum](state, batch)  # lr = 0 at step 0 (warmup)
    state, m_second = step_fns[accum](state, batch)
    results.append(jax.device_get((state, (m_first, m_second))))
  (s1, m1), (s2, m2) = results
  for a, b in zip(m1, m2):
    for k in ("loss", "grad_norm", "lr"):
      np.testing.assert_allclose(b[k], a[k], rtol=1e-5, err_msg=k)
    assert a["tokens"] == b["tokens"] == batch["attn_mask"].sum()
  # Adam's moments are linear (mu) and quadratic (nu, twice the relative rounding) in the
  # gradients: equal up to rounding.
  tree_allclose(s2.opt_state, s1.opt_state, lambda leaf: 2 * gradient_atol(leaf))
  # Its step divides mu by sqrt(nu), so a weight whose gradient is rounding noise (its
  # terms cancel) may move by up to lr either way: the weights agree to a tenth of lr.
  tree_allclose(s2.params, s1.params, lambda _: train_cfg().lr / 10)


def test_a_few_steps_on_a_fixed_batch_lower_the_loss(tiny, step_fns):
  state = fresh_state(tiny)
  batch = fixed_batch()
  losses = []
  for _ in range(20):
    rng_before = np.asarray(state.rng)
    state, metrics = step_fns[1](state, batch)
    losses.append(float(metrics["loss"]))
  assert int(state.step) == 20
  assert not np.array_equal(rng_before, np.asarray(state.rng))  # a new key every step
  assert losses[-1] < 0.7 * losses[0], losses


def test_the_jitted_step_accepts_per_row_batch_entries(tiny, mesh):
  """Objectives with per-sequence inputs (p_mask, rewards, advantages) need [B] entries."""
  apply, _, shardings, optimizer = tiny
  cfg, state = train_cfg(), fresh_state(tiny)

  def per_row_loss(apply, params, batch, key):
    return fixed_mask_loss(apply, params, {**batch, "p_mask": batch["p_row"][:, None]}, key)

  step = jit_train_step(apply, per_row_loss, optimizer, cfg, shardings, mesh)
  batch = fixed_batch()
  batch["p_row"] = batch.pop("p_mask")[:, 0]
  _, metrics = step(state, batch)
  assert np.isfinite(float(metrics["loss"]))


# --- the loop: one reference run (conftest `tiny_run`), interruptions, resume ----------

COMPARED = ("step", "data_position", "loss", "grad_norm", "lr", "masked_tokens", "tokens")


def records(workdir):
  return [{k: r[k] for k in COMPARED} for r in wdlib.read_metrics(Path(workdir) / "metrics.jsonl")]


def checkpoint_steps(workdir) -> list[int]:
  with Checkpointer(Path(workdir) / "checkpoints", 3) as ckpt:
    return ckpt.all_steps()


def weights(model_dir):
  return load_file(str(Path(model_dir) / "model.safetensors"))


def assert_same_weights(a, b):
  wa, wb = weights(a), weights(b)
  assert sorted(wa) == sorted(wb)
  for name in wa:
    np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)


@pytest.fixture(scope="module")
def cfg(tiny_train_sets):
  return exp_config.load_config("tiny", tiny_train_sets)


@pytest.fixture(scope="module")
def reference(tiny_run):
  workdir, code, out, err = tiny_run
  assert code == 0, err
  return workdir


@pytest.fixture(scope="module")
def interrupted(cfg, tmp_path_factory):
  """A run stopped after step 5 (last checkpoint: step 3). Copy it before use."""
  workdir = tmp_path_factory.mktemp("interrupted") / "wd"
  loop.run(cfg, workdir, stop_after=5)
  return workdir


def copy_of(workdir, tmp_path, name="wd"):
  target = tmp_path / name
  shutil.copytree(workdir, target)
  return target


def test_the_reference_run_logs_every_step_and_keeps_the_last_checkpoints(reference, cfg):
  steps = [r["step"] for r in records(reference)]
  assert steps == list(range(1, cfg.train.steps + 1))
  for r in wdlib.read_metrics(reference / "metrics.jsonl"):
    assert {"step", "loss", "tokens_per_s"} <= set(r)
    assert np.isfinite(r["loss"]) and r["tokens_per_s"] > 0
  assert checkpoint_steps(reference) == [15, 18, 20]


def test_a_finished_workdir_holds_config_tokenizer_checkpoints_and_model(reference, cfg):
  for name in ("config.json", "tokenizer", "checkpoints", "model", "metrics.jsonl"):
    assert (reference / name).exists(), name
  saved = exp_config.load_resolved(reference / "config.json")
  vocab = saved.model.vocab_size
  assert vocab < 64  # the sentencepiece vocabulary of this tiny corpus
  assert saved == dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab))
  assert {"config.json", "model.safetensors"} <= {p.name for p in (reference / "model").iterdir()}


def test_an_interrupted_run_has_metrics_to_its_stop_and_no_exported_model(interrupted):
  assert [r["step"] for r in records(interrupted)] == [1, 2, 3, 4, 5]
  assert checkpoint_steps(interrupted) == [3]
  assert not (interrupted / "model").exists()


def test_resuming_reproduces_the_uninterrupted_run_exactly(interrupted, reference, cfg,
                                                           tmp_path):
  workdir = copy_of(interrupted, tmp_path)
  ref_records = records(reference)
  # the first steps are already the same before resuming
  assert records(workdir) == ref_records[:5]
  loop.run(cfg, workdir)
  got = records(workdir)
  assert [r["step"] for r in got] == list(range(1, cfg.train.steps + 1))  # 4, 5 redone once
  assert got == ref_records  # exactly equal losses, gradient norms, data positions
  assert_same_weights(workdir / "model", reference / "model")


def test_a_run_killed_with_sigkill_resumes_to_the_same_losses_and_weights(reference, cfg,
                                                                         tiny_train_sets,
                                                                         tmp_path):
  """`mro train` in a subprocess, SIGKILLed after checkpoint 3 and a later step's log."""
  workdir = tmp_path / "wd"
  mro = Path(sys.executable).with_name("mro")
  argv = [str(mro), "train", "--config", "tiny", "--workdir", str(workdir)]
  for item in tiny_train_sets:
    argv += ["--set", item]
  assert mro.is_file(), f"console script not found at {mro}"
  log = tmp_path / "stderr.txt"
  with log.open("w") as stderr:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 120
    try:
      while proc.poll() is None and time.monotonic() < deadline:
        if (workdir / "checkpoints" / "3").is_dir() and any(
            r["step"] > 3 for r in wdlib.read_metrics(workdir / "metrics.jsonl")):
          proc.send_signal(signal.SIGKILL)
          break
        time.sleep(0.005)
    finally:
      if proc.poll() is None and time.monotonic() >= deadline:
        proc.kill()
      proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL, (proc.returncode, log.read_text()[-2000:])
  assert not (workdir / "model").exists(), "the run finished before it was killed"
  before = records(workdir)
  assert before and before == records(reference)[:len(before)]

  assert json.loads((workdir / "run.lock").read_text())["pid"] == proc.pid  # left by the kill

  done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  assert f"names PID {proc.pid} on " in done.stderr and "taken over" in done.stderr
  assert not (workdir / "run.lock").exists()
  assert records(workdir) == records(reference)
  assert_same_weights(workdir / "model", reference / "model")


def nan_loss(apply, params, batch, key):
  loss = jnp.nan + 0.0 * sum(jnp.sum(p) for p in jax.tree.leaves(params))
  return loss, {"tokens": batch["attn_mask"].sum()}


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(
    interrupted, cfg, tmp_path):
  workdir = copy_of(interrupted, tmp_path)
  with pytest.raises(NonFiniteLossError, match=r"at step 4\b.*checkpoint is step 3"):
    loop.run(cfg, workdir, loss_fn=nan_loss)
  assert checkpoint_steps(workdir) == [3]  # nothing newer
  assert [r["step"] for r in records(workdir)] == [1, 2, 3]  # no record of the NaN step
  for f in (interrupted / "checkpoints" / "3").rglob("*"):  # checkpoint 3 is untouched
    if f.is_file():
      assert f.read_bytes() == (workdir / f.relative_to(interrupted)).read_bytes(), f
  model, *_ = loading.load_inference_model(workdir)  # and still restores
  assert all(np.isfinite(x).all() for x in state_leaves(model))


@jax.custom_vjp
def _one_with_nan_gradient(params):
  return jnp.float32(1.0)


def _fwd(params):
  return jnp.float32(1.0), params


def _bwd(params, g):
  return (jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), params),)


_one_with_nan_gradient.defvjp(_fwd, _bwd)


def nan_gradient_loss(apply, params, batch, key):
  """A finite loss whose gradient is NaN (as a NaN in the backward pass alone gives)."""
  return _one_with_nan_gradient(params), {"tokens": batch["attn_mask"].sum()}


def test_a_nan_gradient_stops_the_run_before_a_checkpoint_saves_nan_weights(interrupted, cfg,
                                                                             tmp_path):
  workdir = copy_of(interrupted, tmp_path)
  with pytest.raises(NonFiniteLossError, match=r"step 4\b"):
    loop.run(cfg, workdir, loss_fn=nan_gradient_loss, stop_after=6)
  assert checkpoint_steps(workdir) == [3]


def test_a_workdir_started_with_another_config_is_refused_naming_the_differences(
    interrupted, tiny_train_sets, tmp_path):
  workdir = copy_of(interrupted, tmp_path)
  before = (workdir / "metrics.jsonl").read_text()
  other = exp_config.load_config("tiny", tiny_train_sets + ["train.lr=2e-3",
                                                            "model.d_model=64"])
  with pytest.raises(ValueError) as err:
    loop.run(other, workdir)
  message = str(err.value)
  assert "train.lr: 0.001 (workdir) vs 0.002 (now)" in message
  assert "model.d_model: 32 (workdir) vs 64 (now)" in message
  assert "vocab_size" not in message  # follows the tokenizer; not a difference
  assert (workdir / "metrics.jsonl").read_text() == before


@pytest.fixture
def started_with_tokenizer_at(reference, tiny_train_sets, tmp_path):
  """A run given the reference's tokenizer at tmp_path/a/tok, stopped after step 5:
  (workdir, that path, a function giving the config with tokenizer.path=P)."""
  def with_tokenizer(path):
    return exp_config.load_config("tiny", tiny_train_sets + [f"tokenizer.path={path}"])
  old = tmp_path / "a" / "tok"
  shutil.copytree(reference / "tokenizer", old)
  workdir = tmp_path / "wd"
  loop.run(with_tokenizer(old), workdir, stop_after=5)
  return workdir, old, with_tokenizer


@pytest.mark.parametrize("how", ["moved", "copied, workdir from before inputs.json"])
def test_a_path_setting_that_moved_with_its_content_resumes_the_run(
    started_with_tokenizer_at, reference, cfg, tmp_path, how):
  workdir, old, with_tokenizer = started_with_tokenizer_at
  new = tmp_path / "b" / "tok"  # the same files in another checkout
  if how == "moved":  # the old place is gone: the digest recorded at the start decides
    shutil.move(old, new)
  else:  # no recorded digest: the old place's content decides
    shutil.copytree(old, new)
    (workdir / "inputs.json").unlink()
  loop.run(with_tokenizer(new), workdir)
  assert records(workdir) == records(reference)
  assert json.loads((workdir / "config.json").read_text())["tokenizer"]["path"] == str(new)


def test_a_path_setting_naming_other_content_is_refused(started_with_tokenizer_at, tmp_path):
  workdir, old, with_tokenizer = started_with_tokenizer_at
  new = tmp_path / "b" / "tok"
  shutil.move(old, new)
  (new / "extra.txt").write_text("not the file the run started with")
  with pytest.raises(ValueError, match=rf"tokenizer.path: '{old}' \(workdir\) vs '{new}' \(now\)"):
    loop.run(with_tokenizer(new), workdir)


def test_recording_the_config_again_reads_only_the_inputs_that_changed(cfg, tmp_path,
                                                                       monkeypatch):
  data = tmp_path / "data" / "train.jsonl"
  data.parent.mkdir()
  data.write_text('{"x": 1}\n')
  run_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=str(data)))
  wd = wdlib.Workdir(tmp_path / "wd")
  wd.root.mkdir()
  wdlib.record_config(wd, run_cfg)
  first = json.loads(wd.inputs.read_text())["data.path"]
  read = []
  monkeypatch.setattr(wdlib, "path_digest", lambda p: read.append(p) or "new digest")
  wdlib.record_config(wd, run_cfg)  # unchanged: the recorded digest is kept
  assert read == [] and json.loads(wd.inputs.read_text())["data.path"] == first
  data.write_text('{"x": 22}\n')  # another size: a stamp that differs on any file system
  wdlib.record_config(wd, run_cfg)
  assert read == [str(data)]
  assert json.loads(wd.inputs.read_text())["data.path"]["sha256"] == "new digest"


def test_a_finished_run_given_more_steps_continues_from_its_last_checkpoint(
    reference, tiny_train_sets, cfg, tmp_path):
  workdir = copy_of(reference, tmp_path)
  longer = exp_config.load_config("tiny", tiny_train_sets + [f"train.steps={cfg.train.steps + 4}"])
  loop.run(longer, workdir)
  got = records(workdir)
  assert got[:cfg.train.steps] == records(reference)  # the first run's steps are kept as run
  assert [r["step"] for r in got] == list(range(1, cfg.train.steps + 5))
  # the cosine follows the new end
  assert got[cfg.train.steps]["lr"] > got[cfg.train.steps - 1]["lr"]
  assert read_jsonl(workdir / "extensions.jsonl") == [
      {"from_steps": cfg.train.steps, "to_steps": cfg.train.steps + 4}]
  assert exp_config.load_resolved(workdir / "config.json").train.steps == cfg.train.steps + 4
  shorter = exp_config.load_config("tiny", tiny_train_sets + [f"train.steps={cfg.train.steps - 2}"])
  expected = rf"train.steps: {cfg.train.steps + 4} \(workdir\) vs {cfg.train.steps - 2} \(now\)"
  with pytest.raises(ValueError, match=expected):
    loop.run(shorter, workdir)


def test_a_run_stopped_between_its_last_checkpoint_and_its_export_exports_on_rerun(
    reference, cfg, tmp_path):
  workdir = copy_of(reference, tmp_path)
  shutil.rmtree(workdir / "model")
  loop.run(cfg, workdir)
  assert records(workdir) == records(reference)  # nothing retrained
  assert_same_weights(workdir / "model", reference / "model")


def test_a_workdir_saved_before_a_field_was_added_resumes_with_the_fields_default(
    interrupted, reference, cfg, tmp_path):
  workdir = copy_of(interrupted, tmp_path)
  saved = json.loads((workdir / "config.json").read_text())
  del saved["model"]["qk_norm"], saved["train"]["min_lr_ratio"]  # as before those fields
  (workdir / "config.json").write_text(json.dumps(saved))
  loop.run(cfg, workdir)
  assert records(workdir) == records(reference)


def test_truncating_metrics_tolerates_a_line_torn_by_a_kill(tmp_path):
  path = tmp_path / "metrics.jsonl"
  for step in range(1, 6):
    wdlib.append_metrics(path, {"step": step, "loss": 1.0 / step})
  with path.open("a") as f:
    f.write('{"step": 6, "lo')  # killed in the middle of a write
  wdlib.truncate_metrics(path, 3)
  assert [r["step"] for r in wdlib.read_metrics(path)] == [1, 2, 3]


# --- load_inference_model ----------------------------------------------------------------


def state_leaves(model):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def test_a_workdir_and_its_exported_model_load_the_same_weights_and_tokenizer(reference):
  m1, c1, ids1, tok1 = loading.load_inference_model(reference)
  m2, c2, ids2, tok2 = loading.load_inference_model(reference / "model")
  assert c1 == c2 and ids1 == ids2 and tok1.vocab_size == tok2.vocab_size == c1.vocab_size
  for a, b in zip(state_leaves(m1), state_leaves(m2)):
    np.testing.assert_array_equal(a, b)
  assert tok1.encode("12+34=") == tok2.encode("12+34=")


def test_a_workdir_without_export_loads_its_latest_checkpoint(reference, tmp_path):
  """The final checkpoint and the exported model hold bitwise the same weights."""
  workdir = copy_of(reference, tmp_path)
  shutil.rmtree(workdir / "model")
  m_ckpt, c_ckpt, ids_ckpt, _ = loading.load_inference_model(workdir)
  m_export, c_export, ids_export, _ = loading.load_inference_model(reference / "model")
  assert ids_ckpt == ids_export
  assert c_ckpt.d_model == c_export.d_model and c_ckpt.vocab_size == c_export.vocab_size
  for a, b in zip(state_leaves(m_ckpt), state_leaves(m_export)):
    np.testing.assert_array_equal(a, b)


def test_loading_a_model_dir_without_tokenizer_is_a_clear_error(fixture_dir):
  with pytest.raises(ValueError, match=r"holds no tokenizer.*tokenizer\.model.*tokenizer\.json"):
    loading.load_inference_model(fixture_dir)


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p], ids=["missing", "empty"])
def test_loading_a_missing_or_empty_dir_is_a_value_error(tmp_path, make):
  with pytest.raises(ValueError, match="does not exist|neither a workdir nor a model"):
    loading.load_inference_model(make(tmp_path))
