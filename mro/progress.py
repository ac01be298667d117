"""Progress of long work, as a user sees it: a bar on a terminal, plain lines in a log.

`mro eval` shows one per setting, `mro diagnose` one over its decodes, `mro reject-sample`
one for its trajectory collection, `mro train` / `mro rl` one for the optimizer steps.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
  """Progress of a long loop: a tqdm bar on a terminal, else a plain line at most every
  `every` seconds and at the end (items done, items/s, running accuracy when the caller
  counts correct items, and the caller's latest values such as the loss). `initial` items
  were done before (a resumed run); `enabled=False` shows nothing."""

  def __init__(self, label: str, total: int, stream=None, every: float = 10.0,
               unit: str = "examples", initial: int = 0, enabled: bool = True):
    self.label, self.total, self.every, self.unit = label, total, every, unit
    self.stream = sys.stderr if stream is None else stream
    self.enabled = enabled
    self.done, self.initial, self.correct = initial, initial, 0.0
    self.start = self.last = time.perf_counter()
    self.bar = None
    if enabled and getattr(self.stream, "isatty", lambda: False)():
      self.bar = tqdm(total=total, initial=initial, desc=label, unit=unit.rstrip("s"),
                      file=self.stream, leave=False, dynamic_ncols=True)

  def update(self, n: int, correct: float | None = None, **values: str) -> None:
    """`n` more items done, `correct` of them right (None: no accuracy to show); `values`
    (already formatted) are shown beside the count."""
    if not self.enabled:
      return
    self.done += n
    scored = correct is not None
    self.correct += correct or 0.0
    acc = self.correct / max(self.done - self.initial, 1)
    now = time.perf_counter()
    if self.bar is not None:
      self.bar.update(n)
      shown = ({"acc": f"{acc:.3f}"} if scored else {}) | values
      if shown:
        self.bar.set_postfix(shown)
      return
    if now - self.last >= self.every or self.done >= self.total:
      rate = (self.done - self.initial) / max(now - self.start, 1e-9)
      print(f"[{self.label}] {self.done}/{self.total} {self.unit}, {rate:.1f} {self.unit}/s"
            + (f", accuracy so far {acc:.4f}" if scored else "")
            + "".join(f", {k} {v}" for k, v in values.items()), file=self.stream,
            flush=True)
      self.last = now

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
