"""One process of a multi-host run of the `mro` verbs (tests/test_multihost_verbs.py starts
two, with 4 fake CPU devices each).

    python multihost_verbs_worker.py PLAN.json PROCESS_ID PORT

PLAN.json lists the commands ({"name", "argv": [argv of process 0, argv of process 1]}).
Each one is run as `mro.cli.main(argv + --coordinator/--num-processes/--process-id)`: the
first call joins the other process (the verbs' own joining), the later ones find it joined.
Python starts once for all of them, which keeps the test short. Each command's exit code
is printed as `=== NAME exit CODE` (a failing command does not stop the next).
"""

from __future__ import annotations

import json
import sys
import time


def main() -> int:
  plan_path, process_id, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
  with open(plan_path) as f:
    plan = json.load(f)
  from mro import cli
  flags = ["--coordinator", f"localhost:{port}", "--num-processes", "2",
           "--process-id", str(process_id)]
  for item in plan:
    t0 = time.perf_counter()
    code = cli.main(item["argv"][process_id] + flags)
    print(f"=== {item['name']} exit {code} seconds {time.perf_counter() - t0:.1f}",
          flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
