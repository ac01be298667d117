"""`python -m mro.sweeps.host PROGRAM ...`: one process of a multi-host sweep run of a
user's script (the `mro` verbs join by themselves, `mro.hosts`).

Joins the run's other processes with `jax.distributed.initialize` (coordinator address,
process count and id from MRO_COORDINATOR_ADDRESS, MRO_NUM_PROCESSES, MRO_PROCESS_ID, set
by the sweep backends), then runs PROGRAM in this process as if started directly:
`mro VERB ARGS...` or `python SCRIPT ARGS...`. The program sees the global devices of
every process (`jax.devices()`, `jax.process_index()`).
"""

from __future__ import annotations

import os
import runpy
import sys

from mro import hosts


def main(argv: list[str]) -> None:
  if len(argv) < 2 or argv[0] not in ("mro", "python"):
    raise SystemExit("usage: python -m mro.sweeps.host (mro VERB | python SCRIPT) ARGS...")
  hosts.join()  # from the MRO_* environment
  if argv[0] == "mro":
    sys.argv = argv
    runpy.run_module("mro.cli", run_name="__main__", alter_sys=True)
  else:
    sys.argv = argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(argv[1])))
    runpy.run_path(argv[1], run_name="__main__")


if __name__ == "__main__":
  main(sys.argv[1:])
