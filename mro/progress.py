"""Progress of long work, as a user sees it: a bar on a terminal, plain lines in a log.

`mro eval` shows one per setting, `mro reject-sample` one for its trajectory collection.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
  """Progress of a long loop over examples: a tqdm bar on a terminal, else a plain line at
  most every `every` seconds and at the end (items done, items/s, running accuracy when
  the caller counts correct items)."""

  def __init__(self, label: str, total: int, stream=None, every: float = 10.0):
    self.label, self.total, self.every = label, total, every
    self.stream = sys.stderr if stream is None else stream
    self.done = self.correct = 0
    self.start = self.last = time.perf_counter()
    self.bar = None
    if getattr(self.stream, "isatty", lambda: False)():
      self.bar = tqdm(total=total, desc=label, unit="ex", file=self.stream, leave=False,
                      dynamic_ncols=True)

  def update(self, n: int, correct: float | None = None) -> None:
    """`n` more items done, `correct` of them right (None: no accuracy to show)."""
    self.done += n
    scored = correct is not None
    self.correct += correct or 0.0
    acc = self.correct / max(self.done, 1)
    now = time.perf_counter()
    if self.bar is not None:
      self.bar.update(n)
      if scored:
        self.bar.set_postfix(acc=f"{acc:.3f}")
      return
    if now - self.last >= self.every or self.done >= self.total:
      rate = self.done / max(now - self.start, 1e-9)
      print(f"[{self.label}] {self.done}/{self.total} examples, {rate:.1f} ex/s"
            + (f", accuracy so far {acc:.4f}" if scored else ""), file=self.stream,
            flush=True)
      self.last = now

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
