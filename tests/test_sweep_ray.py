"""The Ray backend on a real local Ray cluster (2 CPUs, started by `ray.init`): the same
3-run sweep as the local backend, one of its runs killed mid-way (its Ray worker, by PID)
and retried from its checkpoint, a relaunch that starts nothing, and a 2-host `mro train`
(`hosts: 2`) whose process 1 is killed: the group starts again and ends as the same run
does uninterrupted on the local backend's multi-process mode.

Skipped only when Ray is not importable (`pip install -e .[ray]`; CI installs it)."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

ray = pytest.importorskip("ray")
# ray.init starts its processes with a preexec_fn, i.e. a plain fork of this (JAX) process
# that execs at once: JAX's warning about forking does not apply.
pytestmark = [pytest.mark.integration,  # a local Ray cluster (and two hosts on it)
              pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")]

from mro import sweeps  # noqa: E402
from mro.files import parse_jsonl_line  # noqa: E402

VICTIM = "lr-0.002"  # the run whose worker is killed
STEPS, EVERY = "train.steps=200", "train.checkpoint_every=20"


@pytest.fixture(scope="module")
def cluster():
  ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
           object_store_memory=100 * 2**20)
  yield
  ray.shutdown()


def sweep_file(tmp: Path, tiny_sets, backend: str) -> Path:
  spec = {"name": "lr", "command": "train", "config": "tiny", "backend": backend,
          "root": str(tmp / backend), "set": [*tiny_sets, STEPS, EVERY],
          "grid": {"train.lr": [0.001, 0.002, 0.003]}, "concurrency": 2,
          "ray": {"resources": {"CPU": 1}, "max_retries": 2}}
  path = tmp / f"{backend}.yaml"
  path.write_text(yaml.safe_dump(spec))
  return path


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, tiny_train_sets):
  tmp = tmp_path_factory.mktemp("sweeps")
  start = time.monotonic()
  rows = sweeps.run_sweep(sweep_file(tmp, tiny_train_sets, "local"))
  return tmp, rows, time.monotonic() - start


def _children(pid: int) -> list[int]:
  kids = []
  for entry in Path("/proc").iterdir():
    if entry.name.isdigit():
      try:
        if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
          kids.append(int(entry.name))
      except (OSError, IndexError):
        pass
  return kids


def _alive(pid: int) -> bool:
  try:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


def _past_a_checkpoint(workdir: Path):
  """(newest complete checkpoint, metrics lines) once a later step is logged, else None."""
  ckpts = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
  lines = (workdir / "metrics.jsonl").read_text().splitlines() \
      if (workdir / "metrics.jsonl").exists() else []
  last = parse_jsonl_line(lines[-1]) if lines else None
  return (max(ckpts), lines) if ckpts and last and last["step"] > max(ckpts) else None


def _kill_mid_way(pid: int, workdir: Path, record: dict) -> None:
  """Once a checkpoint is complete and later steps are logged, SIGKILLs the worker."""
  deadline = time.monotonic() + 120
  while time.monotonic() < deadline and not (workdir / "done.json").exists():
    if past := _past_a_checkpoint(workdir):
      record.update(checkpoint=past[0], lines=past[1], children=_children(pid))
      os.kill(pid, signal.SIGKILL)
      time.sleep(1.0)  # the run's program must not outlive its worker (nor write on)
      record["alive"] = [p for p in record["children"] if _alive(p)]
      return
    time.sleep(0.02)


@pytest.fixture(scope="module")
def ray_sweep(cluster, local_sweep, tiny_train_sets):
  tmp = local_sweep[0]
  events, killed, threads = [], {}, []

  def on_event(e):
    events.append(e)
    if e.run == VICTIM and e.kind == "started":
      threads.append(threading.Thread(target=_kill_mid_way, args=(
          e.pid, tmp / "ray" / "lr" / VICTIM, killed)))
      threads[-1].start()

  start = time.monotonic()
  rows = sweeps.run_sweep(sweep_file(tmp, tiny_train_sets, "ray"), on_event=on_event)
  for t in threads:
    t.join()
  return rows, events, killed, time.monotonic() - start


def test_a_local_ray_cluster_runs_the_sweep_with_the_same_summary_as_the_local_backend(
    local_sweep, ray_sweep):
  tmp, local_rows, _ = local_sweep
  rows, events, _, _ = ray_sweep
  assert rows == local_rows and len(rows) == 3 and all(r["done"] and r["steps"] == 200
                                                       for r in rows)
  for name in ("summary.jsonl", "summary.md"):
    assert (tmp / "ray" / "lr" / name).read_text() == (tmp / "local" / "lr" / name).read_text()
  finished = [e for e in events if e.kind == "finished"]
  assert sorted(e.run for e in finished) == [r["run"] for r in rows]
  assert all("step 200, loss" in e.text and "sweep.log" in e.text for e in finished)


def _losses(workdir: Path) -> list[tuple[int, float]]:
  return [(r["step"], r["loss"]) for r in map(json.loads, (workdir / "metrics.jsonl")
                                               .read_text().splitlines())]


def test_a_run_whose_worker_is_killed_is_retried_and_ends_as_if_uninterrupted(
    local_sweep, ray_sweep):
  tmp = local_sweep[0]
  _, events, killed, _ = ray_sweep
  assert killed, "the run finished before a checkpoint could be seen"
  kinds = [(e.kind, e.attempt) for e in events if e.run == VICTIM]
  assert kinds == [("started", 1), ("retried", 2), ("finished", 2)]
  ray_wd, local_wd = tmp / "ray" / "lr" / VICTIM, tmp / "local" / "lr" / VICTIM
  # the killed attempt's program died with its worker (within a second), and the retry
  # resumed: the lines up to the checkpoint are the first attempt's (its timings), the
  # rest were recomputed
  assert killed["children"] and killed["alive"] == []
  lines = (ray_wd / "metrics.jsonl").read_text().splitlines()
  resumed = killed["checkpoint"]
  assert lines[:resumed] == killed["lines"][:resumed]
  assert lines[resumed] != killed["lines"][resumed]
  assert _losses(ray_wd) == _losses(local_wd) and len(lines) == 200
  got = load_file(ray_wd / "model" / "model.safetensors")
  want = load_file(local_wd / "model" / "model.safetensors")
  assert got.keys() == want.keys()
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  log = (ray_wd / "sweep.log").read_text()  # two attempts, in the driver's directory
  assert log.count("=== ") == 2 and log.count(f", in {os.getcwd()}: ") == 2


def test_relaunching_a_finished_sweep_on_ray_starts_nothing(local_sweep, ray_sweep,
                                                            tiny_train_sets):
  tmp = local_sweep[0]
  metrics = sorted((tmp / "ray" / "lr").glob("*/metrics.jsonl"))
  mtimes = [p.stat().st_mtime for p in metrics]
  events = []
  rows = sweeps.run_sweep(sweep_file(tmp, tiny_train_sets, "ray"), on_event=events.append)
  assert [e.kind for e in events] == ["skipped"] * 3 and rows == ray_sweep[0]
  assert [p.stat().st_mtime for p in metrics] == mtimes


# A 2-host `mro train` (one (2, 2, 2) mesh over 2 processes with 4 CPU devices each).
TWO_HOSTS = ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2", "model.n_layers=1",
             "train.steps=12", "train.checkpoint_every=4"]


def two_host_sweep(tmp: Path, tiny_sets, backend: str) -> Path:
  spec = {"name": "mh", "command": "train", "config": "tiny", "backend": backend,
          "root": str(tmp / backend), "set": [*tiny_sets, *TWO_HOSTS], "hosts": 2,
          "env": {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
          "ray": {"placement": "SPREAD", "heartbeat_s": 10, "max_retries": 2},
          "runs": [{"name": "t"}]}
  path = tmp / f"mh_{backend}.yaml"
  path.write_text(yaml.safe_dump(spec))
  return path


def _program_of(process_id: int, workdir: Path) -> int | None:
  """The pid of the `mro train` program that is process `process_id` of the run."""
  for entry in Path("/proc").iterdir():
    try:
      if not entry.name.isdigit() or str(workdir) not in (entry / "cmdline").read_text():
        continue
      environ = (entry / "environ").read_bytes().split(b"\0")
    except OSError:
      continue
    if f"MRO_PROCESS_ID={process_id}".encode() in environ and b"mro.cli" in \
        (entry / "cmdline").read_bytes():
      return int(entry.name)
  return None


def _kill_process_1(workdir: Path, record: dict) -> None:
  """Once a checkpoint is complete and a later step is logged, SIGKILLs process 1."""
  deadline = time.monotonic() + 900
  while time.monotonic() < deadline and not (workdir / "done.json").exists():
    past = _past_a_checkpoint(workdir)
    if past and (pid := _program_of(1, workdir)):
      os.kill(pid, signal.SIGKILL)
      record.update(checkpoint=past[0], step=parse_jsonl_line(past[1][-1])["step"], pid=pid)
      return
    time.sleep(0.02)


def test_a_two_host_train_run_restarts_as_a_group_when_process_1_dies_and_ends_as_if_not(
    cluster, tmp_path, tiny_train_sets):
  """`hosts: 2, command: train`: on the local backend's multi-process mode, uninterrupted;
  on Ray, process 1's program is killed mid-run, the group starts again and resumes from
  its checkpoint, and ends with the uninterrupted run's losses and weights."""
  sweeps.run_sweep(two_host_sweep(tmp_path, tiny_train_sets, "local"))
  local_wd, ray_wd = tmp_path / "local" / "mh" / "t", tmp_path / "ray" / "mh" / "t"
  assert (local_wd / "done.json").exists() and (local_wd / "sweep.host1.log").exists()
  events, killed = [], {}
  killer = threading.Thread(target=_kill_process_1, args=(ray_wd, killed))
  killer.start()
  sweeps.run_sweep(two_host_sweep(tmp_path, tiny_train_sets, "ray"), on_event=events.append)
  killer.join()
  assert killed, "the run finished before process 1 could be killed"
  assert [e.kind for e in events] == ["started", "retried", "finished"]
  assert all("2 hosts, coordinator" in e.text for e in events[:2])
  assert _losses(ray_wd) == _losses(local_wd) and len(_losses(ray_wd)) == 12
  got = load_file(ray_wd / "model" / "model.safetensors")
  want = load_file(local_wd / "model" / "model.safetensors")
  assert got.keys() == want.keys()
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  log = (ray_wd / "sweep.host1.log").read_text()  # process 1: two attempts, one killed
  assert log.count("=== ") == 3 and "=== exit -9" in log
