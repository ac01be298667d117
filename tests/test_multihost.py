"""Multi-host with JAX's own runtime (`jax.distributed`, CPU collectives over gloo): two
processes on localhost with 4 CPU devices each form one 8-device (2, 2, 2) mesh.

They train one step and sample (the fixture model, read onto the mesh from its HF file)
like a single process; their Orbax checkpoint and HF export
restore in one process; and when one of them is killed, the survivor stops within
seconds with JAX's error naming the dead task, leaving only complete checkpoints.
"""

import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import helpers
import multihost_worker as mw
from models.checkpoints import load_model
from models.sharding import MeshConfig, make_mesh, shard_batch
from mro.sweeps.local import free_port
from mro.training.checkpointing import Checkpointer

pytestmark = pytest.mark.integration  # two processes joined by jax.distributed
WORKER = Path(__file__).with_name("multihost_worker.py")
DEATH_MESSAGE = "Terminating process because the JAX distributed service detected fatal errors"


def _launch(out: Path, mode: str, victim: int = 1, timeout: float = 240.0, fixture=None):
  """Runs both processes to the end (killing them at `timeout`); per process:
  (exit code, stdout, stderr, seconds after the start)."""
  out.mkdir(parents=True, exist_ok=True)
  env = helpers.joined_process_env(4)
  port, start = free_port(), time.monotonic()
  procs = []
  for i in range(2):
    log = (open(out / f"p{i}.out", "w"), open(out / f"p{i}.err", "w"))
    cmd = [sys.executable, str(WORKER), "--process-id", str(i), "--port", str(port),
           "--out", str(out), "--mode", mode, "--victim", str(victim), "--heartbeat", "5"]
    cmd += ["--fixture", str(fixture)] if fixture else []
    procs.append((subprocess.Popen(cmd, env=env, stdout=log[0], stderr=log[1]), log))
  results = []
  for proc, log in procs:
    try:
      code = proc.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
      for p, _ in procs:
        p.kill()
        p.wait()
      code = "timeout"
    seconds = time.monotonic() - start
    for f in log:
      f.close()
    i = len(results)
    results.append((code, (out / f"p{i}.out").read_text(), (out / f"p{i}.err").read_text(),
                    seconds))
  return results


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, fixture_dir):
  """Train + checkpoint + export + sample on 2 processes, then process 1 is killed."""
  out = tmp_path_factory.mktemp("multihost")
  return out, _launch(out, "run+die", victim=1, fixture=fixture_dir)


def test_two_processes_finish_the_sharded_work(two_process_run):
  out, results = two_process_run
  for i, (_, stdout, stderr, _) in enumerate(results):
    assert f"process {i} done" in stdout, stderr[-3000:]
  assert (out / "result.npz").is_file()


@pytest.fixture(scope="module")
def single_process_step():
  """(state after one step, loss) of the same training in this process, on one device."""
  mesh = make_mesh(MeshConfig())
  _, state, step = mw.train_setup(mesh)
  state, metrics = step(state, shard_batch(mw.fixed_batch(), mesh))
  return state, float(metrics["loss"])


def _params(result) -> dict[str, np.ndarray]:
  return {k[len("param/"):]: result[k] for k in result.files if k.startswith("param/")}


def test_two_processes_train_like_one(two_process_run, single_process_step):
  out, _ = two_process_run
  result = np.load(out / "result.npz")
  state, loss = single_process_step
  np.testing.assert_allclose(result["loss"], loss, rtol=1e-6)
  got = _params(result)
  for path, var in nnx.to_flat_state(state.params):
    np.testing.assert_allclose(got["/".join(map(str, path))], np.asarray(var[...]),
                               rtol=1e-5, atol=1e-6, err_msg=str(path))


def test_two_processes_sample_like_one(two_process_run, llada_tiny):
  """The fixture model, loaded onto the 2-process mesh from its HF file, samples the
  single-device tokens and commit steps exactly (temperature 0)."""
  out, _ = two_process_run
  result = np.load(out / "result.npz")
  tokens, mask = mw.prompts()
  ref = llada_tiny.generate(tokens, mw.sampler_config(), key=jax.random.key(3),
                            prompt_mask_BP=mask)
  np.testing.assert_array_equal(result["tokens"], np.asarray(ref.tokens))
  np.testing.assert_array_equal(result["commit_step"], np.asarray(ref.commit_step))


def test_checkpoints_of_two_processes_restore_in_one(two_process_run, single_process_step):
  out, _ = two_process_run
  got = _params(np.load(out / "result.npz"))
  like, _ = single_process_step
  with Checkpointer(out / "ckpt", keep=2) as ckpt:
    state, meta = ckpt.restore(1, like)
  assert meta == {"step": 1} and int(state.step) == 1
  model, _, _ = load_model(out / "hf")  # the HF export, gathered tensor by tensor
  for tree in (state.params, nnx.state(model)):
    for path, var in nnx.to_flat_state(tree):
      np.testing.assert_array_equal(np.asarray(var[...]), got["/".join(map(str, path))],
                                    err_msg=str(path))


def _check_death(out: Path, results, victim: int, like):
  survivor = 1 - victim
  code_v, _, _, t_victim = results[victim]
  code_s, stdout_s, stderr_s, t_survivor = results[survivor]
  assert code_v == -9, f"the victim should have been killed, got {code_v}"
  assert code_s not in (0, "timeout"), f"the survivor did not stop: {code_s}\n{stderr_s[-2000:]}"
  assert DEATH_MESSAGE in stderr_s and "another task died" in stderr_s
  assert t_survivor - t_victim < 60, (t_victim, t_survivor)
  assert f"process {survivor} saved step 2" in stdout_s
  # Only complete checkpoints are listed, and each restores (in this single process).
  with Checkpointer(out / "ckpt_die", keep=10) as ckpt:
    steps = ckpt.all_steps()
    assert steps and max(steps) <= 3 and 2 in steps, steps
    for step in steps:
      state, meta = ckpt.restore(step, like)
      assert meta == {"step": step} and int(state.step) > 0


def test_when_a_process_dies_the_other_stops_with_a_clear_error(two_process_run,
                                                                single_process_step):
  out, results = two_process_run
  _check_death(out, results, 1, single_process_step[0])


@pytest.mark.slow
def test_when_the_coordinator_dies_the_other_stops_with_a_clear_error(tmp_path,
                                                                      single_process_step):
  _check_death(tmp_path, _launch(tmp_path, "die", victim=0), 0, single_process_step[0])
