"""The local backend: each run is a chain of processes on this machine, `concurrency` runs
at a time (threads wait on them)."""

from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor

from mro.sweeps.execute import execute, run_env
from mro.sweeps.progress import Progress
from mro.sweeps.spec import Run, SweepSpec
from mro.sweeps.summary import outcome


def run_local(spec: SweepSpec, runs: list[Run], progress: Progress) -> list[str]:
  """Runs `runs` (none finished yet); returns the names of those that failed."""
  env = run_env(spec.env, os.environ)

  def one(run: Run) -> int:
    progress.started(run, node=socket.gethostname())
    code = execute(run, env)
    progress.ended(run, code, outcome(run) if code == 0 else "")
    return code

  with ThreadPoolExecutor(spec.concurrency) as pool:
    codes = list(pool.map(one, runs))
  return [r.name for r, code in zip(runs, codes) if code]
