"""The `mro` verbs as multi-host programs: two processes (tests/multihost_verbs_worker.py,
4 fake CPU devices each, one (2, 2, 2) mesh across both) run `mro train`, `rl` (MRO-RL
and diffu-GRPO), `reject-sample` and `eval`, each process given the same command, and
write what one process with 8 devices and the same mesh writes for the same commands:
the same losses, rewards and final weights, the same trajectories, the same evaluation
records and generations. Processes started with different settings are refused by name
before any step, a workdir in use by another run stops both processes (only process 0
takes the lock), and the second process writes nothing but its checkpoint shards.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import helpers
from mro import cli
from mro.evaluation.report import generations_path
from mro.files import read_jsonl
from mro.sweeps.local import free_port
from mro.training import workdir as wdlib
from tiny_models import mro_cli_sets

pytestmark = pytest.mark.integration  # two processes joined by jax.distributed

WORKER = Path(__file__).with_name("multihost_verbs_worker.py")
MESH = ["--set", "mesh.data=2", "--set", "mesh.fsdp=2", "--set", "mesh.tensor=2"]
TRAIN = ["train", "--config", "tiny", *MESH] + [
    a for s in ("model.d_model=32", "model.n_layers=1", "model.n_heads=2",
                "model.n_kv_heads=2", "model.mlp_hidden=64", "tokenizer.vocab_size=64",
                "data.train_size=64", "data.max_prompt_len=16", "data.max_response_len=64",
                "train.steps=4", "train.batch_size=8", "train.warmup_steps=1",
                "train.checkpoint_every=2", "train.log_every=1", "train.progress=false")
    for a in ("--set", s)]
# Fields of an evaluation record that say how and when it ran, not what it found.
# (the commit too: a commit made while the two runs go would otherwise tell them apart)
RUN_FIELDS = {"setting_id", "timestamp", "commit", "seconds", "sample_seconds",
              "first_batch_seconds", "tokens_per_second", "tokens_per_second_after_first_batch",
              "processes"}


def commands(root: Path, start_models, model_dir) -> list[tuple[str, list[str], list[str]]]:
  """(name, argv of process 0, argv of process 1), run in this order."""
  mro = lambda verb, name, *sets: [verb, "--config", "mro_sudoku", "--workdir",
                                   str(root / name), *mro_cli_sets(start_models), *MESH,
                                   *sets]
  evaluate = ["eval", "--model", str(model_dir), "--task", "arith", "--limit", "5",
              "--gen-length", "16", "--steps", "L/4", "--batch-size", "2", "--temperature",
              "1.0", "--out", str(root / "eval" / "res.jsonl")]
  lr = lambda value: [*TRAIN, "--workdir", str(root / "mismatch"), "--set", f"train.lr={value}"]
  grpo = mro("rl", "rl_grpo", "--set", "rl.method=diffu_grpo", "--set", "rewards.use=tv,q")
  locked = [*TRAIN, "--workdir", str(root / "locked")]
  return [("mismatch", lr("0.001"), lr("0.002")),
          ("locked", locked, locked),  # its lock held by the test while the plan runs
          ("train", [*TRAIN, "--workdir", str(root / "train")],
           [*TRAIN, "--workdir", str(root / "train1")]),  # its checkpoints/: a link
          ("rl_sgro", mro("rl", "rl_sgro"), mro("rl", "rl_sgro")),
          ("rl_grpo", grpo, grpo),
          ("reject", mro("reject-sample", "reject"), mro("reject-sample", "reject")),
          ("eval", evaluate, evaluate)]


def _start(out: Path, plan) -> list[subprocess.Popen]:
  """Both processes of the plan, started (stdout and stderr to out/p<i>.out|err)."""
  path = out / "plan.json"
  path.write_text(json.dumps([{"name": n, "argv": [a0, a1]} for n, a0, a1 in plan]))
  # 4 devices each, compiled as the 1-process runs in pytest are (helpers.joined_process_env)
  env = helpers.joined_process_env(
      4, PYTHONPATH=os.pathsep.join([str(WORKER.parents[1]), str(WORKER.parent)]))
  port = free_port()
  return [subprocess.Popen([sys.executable, str(WORKER), str(path), str(i), str(port)],
                           env=env, stdout=open(out / f"p{i}.out", "w"),
                           stderr=open(out / f"p{i}.err", "w")) for i in range(2)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, start_models, model_dir):
  """Every command on two processes (in the background) and on this one: (root of the
  2-process workdirs, root of the 1-process ones, {name: [exit code of process 0, of
  process 1, of the 1-process run]})."""
  two, one = tmp_path_factory.mktemp("two"), tmp_path_factory.mktemp("one")
  (two / "train1").mkdir()
  (two / "train1" / "checkpoints").symlink_to(two / "train" / "checkpoints")
  t0, cpu0 = time.perf_counter(), time.process_time()
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu_children = before.ru_utime + before.ru_stime
  alone = {}
  with contextlib.ExitStack() as stack:
    stack.enter_context(wdlib.lock(two / "locked"))  # another run's, to the two processes
    procs = _start(two, commands(two, start_models, model_dir))
    stack.callback(_stop, procs)
    for name, argv, _ in commands(one, start_models, model_dir)[2:]:
      alone[name] = cli.main(argv)
    t_one = time.perf_counter() - t0
    for proc in procs:
      proc.wait(timeout=3600)
  t_two = time.perf_counter() - t0
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  codes = {}
  for i in range(2):
    for line in (two / f"p{i}.out").read_text().splitlines():
      if line.startswith("=== "):
        name, _, code = line.split()[1:4]
        codes.setdefault(name, []).append(int(code))
  for name, code in alone.items():
    codes.setdefault(name, []).append(code)
  print(f"wall: one process (in pytest) {t_one:.0f} s, two processes {t_two:.0f} s "
        f"(overlapping); CPU: this process {time.process_time() - cpu0:.0f} s, the two "
        f"{children.ru_utime + children.ru_stime - cpu_children:.0f} s")
  return two, one, codes


def _stop(procs: list[subprocess.Popen]) -> None:
  for proc in procs:
    if proc.poll() is None:
      proc.kill()


def _stderr(two: Path, i: int) -> str:
  return (two / f"p{i}.err").read_text()


def test_processes_started_with_different_settings_are_refused_by_name(runs):
  two, _, codes = runs
  assert codes["mismatch"] == [2, 2], _stderr(two, 0)[-3000:]  # (not run alone)
  for i in range(2):
    assert "train.lr: 0.001 (process 0) vs 0.002 (process 1)" in _stderr(two, i)
  assert not (two / "mismatch").exists()  # refused before the workdir was claimed


def test_a_workdir_in_use_stops_both_processes_before_any_step(runs):
  two, _, codes = runs
  assert codes["locked"] == [2, 2], _stderr(two, 0)[-3000:]
  assert f"workdir {two / 'locked'} is in use by PID {os.getpid()}" in _stderr(two, 0)
  assert "process 0 stopped: ValueError: workdir" in _stderr(two, 1)
  assert not any((two / "locked").iterdir())  # nothing written (the test's lock is gone)


def _close(a, b, what: str, terms: float = 0.0) -> None:
  """Equal within 1e-5 relative (float32 sums regrouped by the collectives), and 1e-6 of
  `terms`, the size of the terms a value sums: a GRPO loss near 0 is the difference of
  terms of order one (group-relative advantages cancel), rounded at their scale."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  scale = max(float(np.max(np.abs(b))), terms)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * scale, err_msg=what)


def _same_training(two: Path, one: Path, name: str) -> dict[str, float]:
  """The 2-process run `name` logged the 1-process run's steps and saved its weights;
  the largest relative loss difference and absolute weight difference."""
  got, want = read_jsonl(two / name / "metrics.jsonl"), read_jsonl(one / name / "metrics.jsonl")
  assert [r["step"] for r in got] == [r["step"] for r in want] and got
  keys = [k for k in ("loss", "grad_norm", "reward", "r_q", "r_tv", "kept_mean_reward")
          if k in want[0]]
  for key in keys:
    _close([r.get(key, 0.0) for r in got], [r.get(key, 0.0) for r in want], f"{name} {key}",
           terms=1.0 if key == "loss" else 0.0)
  weights_got = load_file(two / name / "model" / "model.safetensors")
  weights_want = load_file(one / name / "model" / "model.safetensors")
  assert weights_got.keys() == weights_want.keys()
  for k in weights_want:
    _close(weights_got[k], weights_want[k], f"{name} weight {k}")
  loss = lambda rs: np.array([r["loss"] for r in rs])
  return {"loss_rel": float(np.max(np.abs(loss(got) / loss(want) - 1))),
          "weight_abs": max(float(np.max(np.abs(weights_got[k] - weights_want[k])))
                            for k in weights_want)}


@pytest.mark.parametrize("name", ["train", "rl_sgro", "rl_grpo", "reject"])
def test_two_processes_train_like_one(runs, name):
  two, one, codes = runs
  assert codes[name] == [0, 0, 0], _stderr(two, 0)[-3000:] + _stderr(two, 1)[-3000:]
  print(name, _same_training(two, one, name))
  if name == "reject":
    with np.load(two / name / "trajectories.npz") as a, \
        np.load(one / name / "trajectories.npz") as b:
      assert a.files == b.files
      for k in b.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_only_process_0_writes_the_record_and_the_other_only_its_checkpoint_shards(runs):
  two, _, codes = runs
  assert codes["train"] == [0, 0, 0]
  assert [p.name for p in (two / "train1").iterdir()] == ["checkpoints"]
  assert (two / "train1" / "checkpoints").is_symlink()
  wd = two / "train"
  for name in ("config.json", "metrics.jsonl", "tokenizer", "model"):
    assert (wd / name).exists(), name
  steps = sorted(p.name for p in (wd / "checkpoints").iterdir())
  assert steps == ["2", "4"], steps
  for step in steps:  # each checkpoint holds process 1's shards, written through the link
    shards = [p for p in (wd / "checkpoints" / step).rglob("*") if "process_1" in p.name]
    assert shards, sorted(str(p) for p in (wd / "checkpoints" / step).rglob("*"))


def test_two_processes_evaluate_like_one(runs):
  two, one, codes = runs
  assert codes["eval"] == [0, 0, 0], _stderr(two, 0)[-3000:]
  out_two, out_one = two / "eval" / "res.jsonl", one / "eval" / "res.jsonl"
  drop = lambda rs, fields: [{k: v for k, v in r.items() if k not in fields} for r in rs]
  records_two, records_one = read_jsonl(out_two), read_jsonl(out_one)
  assert [r["processes"] for r in records_two + records_one] == [2, 1]
  assert drop(records_two, RUN_FIELDS) == drop(records_one, RUN_FIELDS)
  gens_two = read_jsonl(generations_path(out_two))
  assert [g["index"] for g in gens_two] == list(range(5))
  assert drop(gens_two, {"setting_id"}) == \
      drop(read_jsonl(generations_path(out_one)), {"setting_id"})
