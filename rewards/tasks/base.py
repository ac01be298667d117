"""The task interface: examples, answer extraction, scoring and label-free verification.

A task turns a benchmark (a data file or a generator) into `Example`s and judges
model responses to them:

- `score(example, text)` compares the response with the reference label; its key
  "correct" (0.0/1.0) is the headline metric, other keys are task extras.
- `verify(example, text)` is the task-intrinsic check that needs no label (a Sudoku grid
  is valid and keeps its givens; a Countdown expression uses each number once and hits
  the target; an arithmetic result equals the recomputed operation). Tasks without such
  a check (gsm8k, math500) have `has_verifier = False` and raise NotImplementedError.
- `format_ok(text, style=...)` checks the response format of a prompt style (see
  `formats.py`); `style=None` accepts any style of the task.

Prompt styles: "compact" (short prompts and targets for the project's tiny models) and
"protocol" (the natural-language prompts of the published evaluations, d1 style).

Tasks register themselves by name on import; `get_task(name)` returns the registered
instance. Model output is only ever parsed, never executed.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

from mro.messages import quoted

SPLITS = ("train", "validation", "test")
STYLES = ("compact", "protocol")


@dataclasses.dataclass(frozen=True)
class Example:
  """One problem. `meta` holds task fields (puzzle, numbers, operands, style, ...) and
  is JSON-serialisable; treat it as read-only."""

  id: str  # stable id, e.g. "sudoku-test-00017"
  prompt: str  # what the model is given
  target: str  # a correct response for supervised training ("" if none is known)
  answer: str  # reference answer used for scoring with the label
  meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
  name: str
  has_verifier: bool

  def examples(self, split: str, *, path: str | None = None, limit: int | None = None,
               seed: int = 0, style: str = "compact") -> list[Example]:
    ...

  def extract_answer(self, text: str) -> str | None:
    ...

  def score(self, example: Example, text: str) -> dict[str, float]:
    ...

  def verify(self, example: Example, text: str) -> bool:
    ...

  def format_ok(self, text: str, *, style: str | None = None) -> bool:
    ...


_REGISTRY: dict[str, Task] = {}


def register(task: Task, *, replace: bool = False) -> Task:
  """Adds `task` under `task.name`; a second task with the same name needs replace=True."""
  if not isinstance(task, Task):
    raise ValueError(f"{quoted(task)} does not implement the Task protocol")
  if task.name in _REGISTRY and not replace:
    raise ValueError(f"a task named {quoted(task.name)} is already registered")
  _REGISTRY[task.name] = task
  return task


def get_task(name: str) -> Task:
  if name not in _REGISTRY:
    raise ValueError(f"unknown task {quoted(name)}; known tasks: {', '.join(task_names())}")
  return _REGISTRY[name]


def task_names() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


# --- argument checks shared by the tasks ------------------------------------------


def check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> None:
  if split not in allowed:
    raise ValueError(f"unknown split {quoted(split)}; choose one of {allowed}")


def check_style(style: str | None, *, allow_none: bool = False) -> None:
  if style is None and allow_none:
    return
  if style not in STYLES:
    raise ValueError(f"unknown style {quoted(style)}; choose one of {STYLES}")


def check_limit(limit: int | None) -> None:
  if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                            or limit < 0):
    raise ValueError(f"limit must be None or an integer >= 0, got {quoted(limit)}")


def stable_unit(key: str) -> float:
  """A deterministic pseudo-random number in [0, 1) from a string (SHA-256 based)."""
  digest = hashlib.sha256(key.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def hashed_split(key: str, *, test: float, validation: float) -> str:
  """The split a problem belongs to: "test" for a `test` fraction of keys,
  "validation" for the next `validation` fraction, else "train"."""
  u = stable_unit(key)
  if u < test:
    return "test"
  if u < test + validation:
    return "validation"
  return "train"


# --- answer extraction ------------------------------------------------------------

_BOXED = "\\boxed{"


def last_boxed(text: str) -> str | None:
  """Content of the last `\\boxed{...}` whose braces balance (escaped `\\{`, `\\}` are
  not counted), or None. Linear time even for many unclosed boxes: a box that is still
  open when the next box starts can only close if that next one does."""
  starts = []
  i = text.find(_BOXED)
  while i >= 0:
    starts.append(i)
    i = text.find(_BOXED, i + len(_BOXED))
  for n in range(len(starts) - 1, -1, -1):
    begin = starts[n] + len(_BOXED)
    window_end = starts[n + 1] if n + 1 < len(starts) else len(text)
    depth = 1
    k = begin
    while k < window_end:
      c = text[k]
      if c == "\\":
        k += 2
        continue
      if c == "{":
        depth += 1
      elif c == "}":
        depth -= 1
        if depth == 0:
          return text[begin:k]
      k += 1
  return None


def last_answer_tag(text: str) -> str | None:
  """Content of the last complete `<answer>...</answer>` pair, or None."""
  end = text.rfind("</answer>")
  if end < 0:
    return None
  begin = text.rfind("<answer>", 0, end)
  if begin < 0:
    return None
  return text[begin + len("<answer>"):end]


def extract_answer_text(text: str) -> str | None:
  """The answer a response commits to: the content of the last balanced `\\boxed{}`,
  else of the last `<answer>...</answer>`, stripped; None if neither exists. Tasks with
  numeric answers add a last-number fallback on top of this."""
  for found in (last_boxed(text), last_answer_tag(text)):
    if found is not None:
      return found.strip()
  return None


# --- voting -----------------------------------------------------------------------


def majority_answer(answers: list[str | None],
                    normalize: Callable[[str], str | None] = str.strip) -> str | None:
  """The most frequent answer after `normalize` (None answers, and answers that
  normalize to None or "", are ignored). Ties go to the answer seen first. Returns the
  first original string of the winning class, or None if nothing was counted."""
  counts: collections.Counter[str] = collections.Counter()
  first: dict[str, tuple[int, str]] = {}
  for i, answer in enumerate(answers):
    if answer is None:
      continue
    key = normalize(answer)
    if not key:
      continue
    counts[key] += 1
    first.setdefault(key, (i, answer))
  if not counts:
    return None
  best = max(counts, key=lambda k: (counts[k], -first[k][0]))
  return first[best][1]
