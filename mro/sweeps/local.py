"""The local backend: each run is a chain of processes on this machine, `concurrency` runs
at a time (threads wait on them). A run with `hosts: N` is N processes on this machine
joined by jax.distributed (coordinator: a free port on localhost), each with the sweep's
environment: for testing multi-host runs (on CPU, XLA_FLAGS gives each process its fake
devices; one node's GPUs are not split between the processes). When one of them fails
the others are stopped and the run has failed (a relaunch resumes it)."""

from __future__ import annotations

import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from mro.sweeps.execute import Host, execute, mark_done, run_env
from mro.sweeps.progress import Progress
from mro.sweeps.spec import Run, SweepSpec
from mro.sweeps.summary import outcome


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_group(run: Run, env: dict[str, str]) -> int:
  """The run's programs as `run.hosts` processes here; 0, or the first failure's exit
  code after stopping the others."""
  coordinator = f"localhost:{free_port()}"
  lock, procs, codes = threading.Lock(), [], []

  def started(proc) -> None:
    with lock:
      procs.append(proc)
      stop = bool(codes)
    if stop:  # another process failed before this program started
      proc.kill()

  def host(i: int) -> None:
    code = execute(run, env, host=Host(coordinator, i, run.hosts),
                   write_done=False, note=f"process {i} of {run.hosts}", started=started)
    with lock:
      codes.append(code)
      others = list(procs) if code else []
    for proc in others:  # the group cannot go on without this process
      if proc.poll() is None:
        proc.kill()

  threads = [threading.Thread(target=host, args=(i,)) for i in range(run.hosts)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  code = next((c for c in codes if c), 0)
  if code == 0:
    mark_done(run)
  return code


def run_local(spec: SweepSpec, runs: list[Run], progress: Progress) -> list[str]:
  """Runs `runs` (none finished yet); returns the names of those that failed."""
  env = run_env(spec.env, os.environ)

  def one(run: Run) -> int:
    where = f"{run.hosts} processes" if run.hosts > 1 else None
    progress.started(run, node=socket.gethostname(), where=where)
    code = execute(run, env) if run.hosts == 1 else run_group(run, env)
    progress.ended(run, code, outcome(run) if code == 0 else "")
    return code

  with ThreadPoolExecutor(spec.concurrency) as pool:
    codes = list(pool.map(one, runs))
  return [r.name for r, code in zip(runs, codes) if code]
