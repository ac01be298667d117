"""The workdir lock and the results-file lock (mro/locks.py): a second writer is refused
at once by name, with the first one's PID and host; a lock left by a process that died is
taken over, said so; the lock goes when its holder returns or raises."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mro import cli, locks
from mro.training import workdir as wdlib

ROOT = Path(__file__).resolve().parents[1]

HOLD = """
import sys, time
from mro.training import workdir
with workdir.lock(sys.argv[1]):
  print("held", flush=True)
  time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
  """Starts a second process that holds `path`'s workdir lock; yields a start function."""
  started = []

  def start(workdir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], env=env,
                            stdout=subprocess.PIPE, text=True)
    started.append(proc)
    assert proc.stdout.readline().strip() == "held"
    return proc

  yield start
  for proc in started:
    proc.kill()
    proc.wait()


def train(capsys, workdir: Path) -> tuple[int, str]:
  code = cli.main(["train", "--config", "tiny", "--workdir", str(workdir), "--set",
                   "train.steps=2", "--set", "data.train_size=50"])
  return code, capsys.readouterr().err


def test_a_second_train_on_a_workdir_is_refused_at_once_naming_the_first_runs_pid(
    tmp_path, holder, capsys):
  workdir = tmp_path / "wd"
  first = holder(workdir)
  start = time.perf_counter()
  code, err = train(capsys, workdir)
  assert code == 2 and err.count("\n") == 1, err
  assert f"workdir {workdir} is in use by PID {first.pid} on host {socket.gethostname()}" in err
  assert "use another --workdir" in err
  assert sorted(p.name for p in workdir.iterdir()) == ["run.lock"]  # nothing else written
  assert time.perf_counter() - start < 10  # before the data, the tokenizer, any compile


def test_a_lock_file_naming_a_live_process_of_this_host_refuses_the_run(tmp_path):
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    (tmp_path / "run.lock").write_text(json.dumps({"pid": sleeper.pid,
                                                   "host": socket.gethostname()}))
    with pytest.raises(ValueError, match=f"in use by PID {sleeper.pid} on host"):
      with wdlib.lock(tmp_path):
        pass
  finally:
    sleeper.kill()
    sleeper.wait()
  assert (tmp_path / "run.lock").exists()  # the other process's lock is left alone


def test_a_lock_of_another_host_is_refused_saying_how_to_clear_it(tmp_path):
  lock = tmp_path / "run.lock"
  lock.write_text(json.dumps({"pid": 4242, "host": "gpu-node-7", "since": "yesterday",
                              "command": "mro train --config tiny"}))
  with pytest.raises(ValueError) as excinfo:
    with wdlib.lock(tmp_path):
      pass
  message = str(excinfo.value)
  assert "PID 4242 on host gpu-node-7 (another host)" in message
  assert f"If that process is no longer running, delete {lock}" in message


def test_the_lock_of_a_killed_run_is_taken_over_with_a_message(tmp_path, holder, capsys):
  workdir = tmp_path / "wd"
  first = holder(workdir)
  first.send_signal(signal.SIGKILL)  # dies holding it: the file stays, naming its PID
  first.wait()
  assert json.loads((workdir / "run.lock").read_text())["pid"] == first.pid
  with wdlib.lock(workdir):
    assert json.loads((workdir / "run.lock").read_text())["pid"] == os.getpid()
  err = capsys.readouterr().err
  assert f"names PID {first.pid} on {socket.gethostname()}, which is no longer running; " \
         "taken over" in err


def test_the_lock_is_released_on_return_and_on_an_exception(tmp_path):
  with wdlib.lock(tmp_path):
    assert (tmp_path / "run.lock").exists()
  assert not (tmp_path / "run.lock").exists()
  with pytest.raises(RuntimeError, match="boom"):
    with wdlib.lock(tmp_path):
      raise RuntimeError("boom")
  assert not (tmp_path / "run.lock").exists()
  with wdlib.lock(tmp_path):  # and it can be taken again
    pass


def test_a_lock_held_in_this_process_refuses_a_second_holder(tmp_path):
  with locks.hold(tmp_path / "x.lock", "the thing"):
    with pytest.raises(ValueError, match=f"the thing is in use by PID {os.getpid()}"):
      with locks.hold(tmp_path / "x.lock", "the thing"):
        pass


@pytest.mark.parametrize("under_it", [False, True])
def test_train_on_a_file_as_workdir_is_a_named_error(tmp_path, capsys, under_it):
  afile = tmp_path / "afile"
  afile.write_text("x")
  workdir = afile / "wd" if under_it else afile
  why = (f"cannot be created: {afile} is a file, not a directory" if under_it else
         "is a file, not a directory: give a directory")
  code, err = train(capsys, workdir)
  assert code == 2 and err == f"mro train: error: --workdir {workdir} {why}\n", err
  assert afile.read_text() == "x"


HOLD_RESULTS = """
import sys, time
from mro.evaluation.runner import results_lock
with results_lock(sys.argv[1]):
  print("held", flush=True)
  time.sleep(120)
"""


def test_a_second_eval_on_one_results_file_is_refused_naming_the_first(tmp_path):
  from mro.evaluation.runner import EvalConfig, run_eval

  out = tmp_path / "res.jsonl"
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  first = subprocess.Popen([sys.executable, "-c", HOLD_RESULTS, str(out)], env=env,
                           stdout=subprocess.PIPE, text=True)
  try:
    assert first.stdout.readline().strip() == "held"
    cfg = EvalConfig.build(task="arith", steps="2", limit=2, gen_length=16, out=str(out))
    with pytest.raises(ValueError) as excinfo:
      run_eval(tmp_path / "no-model-needed", cfg)  # refused before the model is opened
  finally:
    first.kill()
    first.wait()
  assert f"results file {out} is in use by PID {first.pid} on host" in str(excinfo.value)
  assert "use another --out" in str(excinfo.value) and not out.exists()
