"""The driver's terminal output: one line per run skipped, started, retried, finished or
failed (with its accuracy and where its log is), each also passed to an optional callback
as an `Event`."""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable

from mro.sweeps.spec import Run
from mro.sweeps.summary import log_path


@dataclasses.dataclass(frozen=True)
class Event:
  run: str
  kind: str  # skipped | waiting | started | retried | finished | failed
  text: str  # the line printed after "[sweep NAME] RUN: "
  attempt: int = 0
  node: str | None = None  # where the attempt runs (Ray: the node's address)
  pid: int | None = None  # the process that runs it (Ray: the worker process)


class Progress:
  """Prints `[sweep NAME] RUN: ...` lines to stderr; thread-safe."""

  def __init__(self, sweep: str, max_attempts: int = 1,
               on_event: Callable[[Event], None] | None = None):
    self.sweep, self.max_attempts, self.on_event = sweep, max_attempts, on_event
    self.attempts: dict[str, int] = {}
    self.started_at: dict[str, float] = {}
    self._lock = threading.Lock()

  def _emit(self, event: Event) -> None:
    with self._lock:
      print(f"[sweep {self.sweep}] {event.run}: {event.text}", file=sys.stderr, flush=True)
      if self.on_event is not None:
        self.on_event(event)

  def skipped(self, run: Run, dry_run: bool = False) -> None:
    self._emit(Event(run.name, "skipped", "to run (dry run)" if dry_run else "done, skipped"))

  def waiting(self, run: Run, why: str) -> None:
    self._emit(Event(run.name, "waiting", f"waiting: {why}"))

  def started(self, run: Run, node: str | None = None, pid: int | None = None,
              where: str | None = None) -> None:
    attempt = self.attempts[run.name] = self.attempts.get(run.name, 0) + 1
    self.started_at.setdefault(run.name, time.monotonic())
    on = f" on {where or node}" + (f" (pid {pid})" if pid else "") if (where or node) else ""
    if attempt == 1:
      text = f"started{on}; log {log_path(run)}"
    else:
      text = (f"retried, attempt {attempt} of {self.max_attempts}{on}: the last attempt's "
              "process or node died; it resumes from its last checkpoint")
    self._emit(Event(run.name, "started" if attempt == 1 else "retried", text, attempt,
                     node, pid))

  def ended(self, run: Run, code: int | None, detail: str) -> None:
    """code 0: finished (detail: its outcome); else failed (detail: why, if known)."""
    seconds = time.monotonic() - self.started_at.get(run.name, time.monotonic())
    if code == 0:
      kind, text = "finished", f"finished in {seconds:.0f} s, {detail}; log {log_path(run)}"
    else:
      why = f"exit {code}" if code is not None else "no attempt left"
      text = f"failed ({why}{': ' + detail if detail else ''}) after {seconds:.0f} s; log " \
             f"{log_path(run)}"
      kind = "failed"
    self._emit(Event(run.name, kind, text, self.attempts.get(run.name, 0)))
