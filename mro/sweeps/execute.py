"""One run's programs, run one after another: what both backends do on the machine that
runs it. The output goes to the run's log (`sweep.log` in its workdir), each program
preceded by a header line saying where, when and what; `done.json` is written when the
last program succeeds, so a relaunched sweep skips the run."""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping

from mro import paths
from mro.files import write_atomic
from mro.sweeps.spec import Run, commands
from mro.sweeps.summary import log_path

REPO = str(paths.ROOT)
HOST_ENV = ("MRO_COORDINATOR_ADDRESS", "MRO_NUM_PROCESSES", "MRO_PROCESS_ID",
            "MRO_HEARTBEAT_S")


@dataclasses.dataclass(frozen=True)
class Host:
  """Process `process_id` of a run on `num_processes` processes joined by jax.distributed."""

  coordinator: str  # host:port of process 0's coordination service
  process_id: int
  num_processes: int
  heartbeat_s: int = 100

  def env(self) -> dict[str, str]:
    values = (self.coordinator, self.num_processes, self.process_id, self.heartbeat_s)
    return {k: str(v) for k, v in zip(HOST_ENV, values)}


def run_env(sweep_env: Mapping[str, str], base: Mapping[str, str]) -> dict[str, str]:
  """A run's environment: `base` (the driver's locally, the worker's on Ray), offline
  datasets, wandb offline unless set, and the sweep's `env:`."""
  return {**base, "HF_DATASETS_OFFLINE": "1",
          "WANDB_MODE": base.get("WANDB_MODE", "offline"), **sweep_env}


def argv(command: list[str], host: Host | None = None) -> list[str]:
  """The process for one of `commands(run)`: `python -m mro.cli ...` (on several hosts the
  verb joins the others itself, from `Host.env`) or `python SCRIPT ...` (on several hosts
  behind `python -m mro.sweeps.host`, which joins them first)."""
  if command[0] == "mro":
    return [sys.executable, "-m", "mro.cli", *command[1:]]
  if host is not None:
    return [sys.executable, "-m", "mro.sweeps.host", *command]
  return [sys.executable, *command[1:]]


def _die_with_parent() -> None:
  """In the child, before exec: SIGKILL when the parent (a Ray worker) dies (Linux)."""
  try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def working_dir(driver_cwd: str) -> str:
  """Where a run's programs start on a cluster node: the driver's working directory where
  the node has it (a checkout at the same path), else the repository of this package, so
  relative paths in a sweep file mean the same as on the driver."""
  return driver_cwd if os.path.isdir(driver_cwd) else REPO


def execute(run: Run, env: Mapping[str, str], *, host: Host | None = None,
            tie_to_parent: bool = False, write_done: bool = True, note: str = "",
            cwd: str | None = None,
            started: Callable[[subprocess.Popen], None] | None = None) -> int:
  """Runs the run's programs (in `cwd`, default this process's); returns 0, or the first
  failing exit code (negative: the process was killed by that signal). `tie_to_parent`:
  the programs die with this process; `started` is given each program's process.
  A rerun keeps what the run's programs already wrote: `mro eval` skips the settings its
  results file holds (their keys name the model and the decode), so an eval interrupted
  after some settings reruns only the rest. `write_done` marks the run finished after the
  last program."""
  run.workdir.mkdir(parents=True, exist_ok=True)
  process_id = host.process_id if host else 0
  env = {**env, **(host.env() if host else {})}
  where = f"{socket.gethostname()} pid {os.getpid()}" + (f", {note}" if note else "") + \
      (f", in {cwd}" if cwd else "")
  with open(log_path(run, process_id), "a") as log:
    for command in commands(run):
      cmd = argv(command, host)
      log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} on {where}: {shlex.join(cmd)}\n")
      log.flush()
      proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                              preexec_fn=_die_with_parent if tie_to_parent else None)
      if started is not None:
        started(proc)
      if code := proc.wait():
        log.write(f"=== exit {code}\n")
        return code
  if write_done:
    mark_done(run)
  return 0


def mark_done(run: Run) -> None:
  write_atomic(run.workdir / "done.json", json.dumps(
      {"name": run.name, "sets": list(run.sets), "time": time.time()}) + "\n")
