"""`run_sweep`: load and check the sweep, skip finished runs, run the rest on the chosen
backend, summarise; a failed sweep raises `SweepFailed` carrying the summary rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mro.sweeps.local import run_local
from mro.sweeps.progress import Event, Progress
from mro.sweeps.ray_backend import run_ray
from mro.sweeps.spec import SweepSpec, expand, load_sweep, validate_configs
from mro.sweeps.summary import is_done, summarize


class SweepFailed(RuntimeError):
  """Some runs failed; `rows` is the summary of the whole sweep (what finished)."""

  def __init__(self, failed: list[str], rows: list[dict[str, Any]], sweep_dir: Path):
    super().__init__(f"{len(failed)} run(s) failed: {', '.join(failed)}; each one's "
                     f"output is in {sweep_dir}/<run>/sweep.log")
    self.failed, self.rows = failed, rows


def with_overrides(spec: SweepSpec, *, root: str | Path | None = None,
                   concurrency: int | None = None, backend: str | None = None,
                   address: str | None = None) -> SweepSpec:
  """The spec with the command line's choices (checked again)."""
  changes: dict[str, Any] = {}
  if root is not None:
    changes["root"] = str(root)
  if concurrency is not None:
    changes["concurrency"] = concurrency
  if backend is not None:
    changes["backend"] = backend
  if address is not None:
    changes["ray"] = dataclasses.replace(spec.ray, address=address)
  return dataclasses.replace(spec, **changes) if changes else spec


def run_sweep(sweep: str | Path | SweepSpec, *, root: str | Path | None = None,
              concurrency: int | None = None, backend: str | None = None,
              address: str | None = None, dry_run: bool = False,
              on_event: Callable[[Event], None] | None = None) -> list[dict[str, Any]]:
  """Runs the sweep's unfinished runs; returns the summary rows (also in summary.jsonl
  and summary.md). Every run's config is loaded first, so a bad `set:` starts nothing."""
  spec = sweep if isinstance(sweep, SweepSpec) else load_sweep(sweep)
  spec = with_overrides(spec, root=root, concurrency=concurrency, backend=backend,
                        address=address)
  runs = expand(spec)
  validate_configs(runs)
  progress = Progress(spec.name, spec.ray.max_retries + 1, on_event)
  if spec.backend == "ray" and not dry_run:
    failed, rows = run_ray(spec, runs, progress)
  else:
    todo = [r for r in runs if not is_done(r)]
    for run in runs:
      if run not in todo or dry_run:
        progress.skipped(run, dry_run=run in todo)
    failed = [] if dry_run else run_local(spec, todo, progress)
    rows = summarize(runs, spec.sweep_dir)
  if failed:
    raise SweepFailed(failed, rows, spec.sweep_dir)
  return rows
