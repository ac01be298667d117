"""`mro sweep FILE`: a grid of runs, each in its own workdir, resumable, summarised; run on
this machine or on a Ray cluster.

A sweep file (YAML, or Python defining `SWEEP = {...}`) holds (spec.py declares each key):

    name: mro_sudoku                  # sweep directory: <root>/<name>/ (root: runs/sweeps)
    command: rl                       # train | reject-sample | rl | eval | script
    config: rl_sudoku                 # shipped config name or YAML path
    set: [train.steps=200]            # overrides shared by every training run
    grid: {rl.baseline: [none, group_mean], rl.n_opt: [1, 2]}    # cartesian product
    runs: [{name: paper, set: [rl.clip_eps=null]},               # extra named variants,
           {name: base, command: eval, model: default}]           # each with its own
                                      # command / config; an eval-only run names its model
    eval: {task: sudoku, steps: "L,L/2,L/4", model: best, limit: 256}
    env: {WANDB_MODE: offline}        # added to every run's environment
    concurrency: 1                    # local backend: runs at a time
    hosts: 1                          # processes per run (docs/multihost.md); a run's
                                      # entry may set its own
    backend: local                    # or ray (docs/sweeps.md): then root must be an
    ray: {address: auto, resources: {CPU: 8, GPU: 1}, max_retries: 3}  # absolute path
                                      # on storage every node sees

Each run is a chain of processes (`mro VERB ...`, or `python SCRIPT --workdir DIR ARGS`
for command script) whose output goes to `sweep.log` in its workdir; with `hosts: N`,
N such chains joined by jax.distributed (Ray: one per node; local: N processes here). A
run is finished when its workdir holds `done.json`; relaunching the sweep skips finished
runs and resumes the others (training resumes from its checkpoints). The summary
(summary.jsonl and a table in summary.md) is built only by reading the workdirs.
"""

from mro.sweeps.driver import SweepFailed, run_sweep, with_overrides
from mro.sweeps.progress import Event
from mro.sweeps.spec import (COMMANDS, RayOptions, Run, RunSpec, SweepSpec, commands, expand,
                             load_sweep, validate_configs)
from mro.sweeps.summary import format_summary, is_done, log_path, outcome, summarize

__all__ = ["COMMANDS", "Event", "RayOptions", "Run", "RunSpec", "SweepFailed", "SweepSpec",
           "commands", "expand", "format_summary", "is_done", "load_sweep", "log_path",
           "outcome", "run_sweep", "summarize", "validate_configs", "with_overrides"]
