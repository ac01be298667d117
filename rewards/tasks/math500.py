"""MATH500: competition problems with boxed answers, judged with `math-verify`.

Data: `{"problem", "solution", "answer", "subject", "level", "unique_id"}` JSON lines,
read with the `datasets` JSON loader; only the "test" split exists. With no `path`,
the shipped copy
`experiments/data/math500/test.jsonl`; `path` may be a file or a directory.

Formats
  compact   prompt = the problem; target `<think>SOLUTION</think><answer>ANSWER</answer>`
  protocol  d1's math prompt + problem; target `<reasoning>\\nSOLUTION\\n</reasoning>\\n`
            `<answer>\\n\\boxed{ANSWER}\\n</answer>`.

Scoring: the answer is the last balanced `\\boxed{}`, else the last `<answer>`, lightly
normalised (`normalize_answer`: `$`, `\\left`/`\\right`, `\\dfrac`, thin spaces, trailing
period; this also makes majority votes count trivially different spellings together).
Gold and prediction are each wrapped as `\\boxed{...}` and parsed by
`math_verify.parse`, then compared with `math_verify.verify(gold, prediction)` (the
order matters to the library). "\\frac{14}{3}" = "14/3" = "4\\frac{2}{3}",
"90^\\circ" = "90", "x=5" = "5", "(3,4]" != "(3,4)".

Cost, bounded on every thread: answers longer than MAX_ANSWER_CHARS or nested deeper
than MAX_DEPTH braces/brackets are judged wrong unparsed, and so are answers whose parse
holds a huge power, a numeric power tower or a huge factorial/binomial (`_costly`).
Every other comparison runs in a worker process (`Judge`) with a deadline of
DEADLINE_SECONDS: math-verify's own timeouts use SIGALRM, which works only on a main
thread (never on an evaluation worker thread) and cannot stop a long computation inside
sympy's C code, so an answer that takes longer is judged wrong and the worker is
replaced. There is no label-free check: `verify` raises NotImplementedError.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import select
import subprocess
import sys
import threading

from mro import paths

from . import data, formats
from .base import Example, check_limit, check_split, check_style, extract_answer_text, register
from .labelled import LabelledTask

TIMEOUT_SECONDS = 2  # math-verify's own parse / compare timeouts, inside the worker
DEADLINE_SECONDS = 5.0  # a whole comparison, enforced by the calling process
MAX_ANSWER_CHARS = 300  # the longest MATH500 reference answer has 53 characters
MAX_DEPTH = 12  # nesting of {}, (), []; MATH500 references reach 4
MAX_EXPONENT = 1000  # larger integer powers and factorials are judged wrong unparsed
_FIELDS = ("problem", "solution", "answer")


def normalize_answer(text: str) -> str:
  """Spelling-only normalisation of a LaTeX answer (never changes its value)."""
  text = text.strip()
  text = text[:-1].rstrip() if text.endswith(".") else text
  text = text.strip("$").strip()
  text = re.sub(r"\\(?:left|right)(?![A-Za-z])", "", text)
  text = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", text)
  text = re.sub(r"\\[!,;]", "", text)
  text = re.sub(r"\s+", " ", text).strip()
  return text[:-1].rstrip() if text.endswith(".") else text


def _timeout() -> int | None:
  return TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None


def _parse(answer: str) -> list:
  from math_verify import parse  # deferred: importing sympy takes about a second

  return parse(f"\\boxed{{{answer}}}", parsing_timeout=_timeout())


@functools.lru_cache(maxsize=4096)
def _parse_gold(answer: str) -> tuple:
  return tuple(_parse(answer))


def _costly(parsed: object) -> bool:
  """Whether comparing `parsed` could make sympy compute a huge number: a power with
  an exponent above MAX_EXPONENT, a numeric power tower (9^{9^{9}}), a factorial or
  binomial of an argument above MAX_EXPONENT. Such answers are judged wrong at once
  instead of spending the whole math-verify timeout."""
  import sympy  # deferred: a slow import that only MATH500's judge needs

  if isinstance(parsed, sympy.MatrixBase):
    return any(_costly(item) for item in parsed)
  if not isinstance(parsed, sympy.Basic):
    return False
  for node in sympy.preorder_traversal(parsed):
    if isinstance(node, sympy.Pow):
      exponent = node.exp
      if exponent.is_Number and abs(exponent) > MAX_EXPONENT:
        return True
      if not exponent.is_Number and exponent.is_number and exponent.has(sympy.Pow):
        return True
    elif isinstance(node, (sympy.factorial, sympy.factorial2, sympy.binomial,
                           sympy.subfactorial)):
      if any(arg.is_Number and abs(arg) > MAX_EXPONENT for arg in node.args):
        return True
  return False


def _depth(text: str) -> int:
  depth = best = 0
  for c in text:
    if c in "{([":
      depth += 1
      best = max(best, depth)
    elif c in "})]":
      depth = max(depth - 1, 0)
  return best


def equivalent(gold: str, predicted: str) -> bool:
  """Whether `predicted` is mathematically the `gold` answer (math-verify), judged in
  the worker process with a deadline (see the module docstring)."""
  if len(predicted) > MAX_ANSWER_CHARS or _depth(predicted) > MAX_DEPTH:
    return False
  return JUDGE(gold, predicted)


def _equivalent_here(gold: str, predicted: str) -> bool:
  """The comparison itself (in the worker process)."""
  from math_verify import verify  # deferred: importing sympy takes about a second

  gold_parsed = list(_parse_gold(gold))
  predicted_parsed = _parse(predicted)
  if not gold_parsed or not predicted_parsed or any(_costly(p) for p in predicted_parsed):
    return False
  return bool(verify(gold_parsed, predicted_parsed, timeout_seconds=_timeout()))


@dataclasses.dataclass(frozen=True)
class Math500Task(LabelledTask):
  name: str = "math500"

  def examples(self, split: str, *, path: str | None = None, limit: int | None = None,
               seed: int = 0, style: str = "compact") -> list[Example]:
    """Rows in file order (first `limit`); `seed` is unused (no sampling)."""
    check_split(split, allowed=("test",))
    check_style(style)
    check_limit(limit)
    if data.is_hub(path):
      rows = data.read_hub(path, "test", _FIELDS)[:limit]
    else:
      rows = data.read_jsonl_datasets(data.resolve_file(path, "math500", "test.jsonl"),
                                      _FIELDS)[:limit]
    return [self._example(f"{self.name}-{split}-{i:05d}", row, style)
            for i, row in enumerate(rows)]

  def _example(self, id_: str, row: dict, style: str) -> Example:
    meta = {"style": style, "subject": row.get("subject"), "level": row.get("level"),
            "unique_id": row.get("unique_id")}
    answer, solution = row["answer"], row["solution"].strip()
    if style == "compact":
      return Example(id_, row["problem"], formats.compact_response(answer, solution), answer,
                     meta)
    return Example(id_, formats.protocol_prompt(formats.D1_MATH_SYSTEM_PROMPT, row["problem"]),
                   formats.protocol_response(solution, answer), answer, meta)

  def extract_answer(self, text: str) -> str | None:
    found = extract_answer_text(text)
    if found is None:
      return None
    return normalize_answer(found) or None

  def matches(self, example: Example, found: str) -> bool:
    return equivalent(example.answer, found)


register(Math500Task())


class Judge:
  """`_equivalent_here` in a worker process, with a deadline per comparison.

  One worker (a fresh `python` running `_serve`, started on first use: a fresh
  interpreter, no forked JAX state) is shared by all threads of this process, one
  comparison at a time, over JSON lines on its stdin/stdout. A comparison that misses
  the deadline or kills the worker is judged wrong; the worker is then killed and a fresh
  one started for the next answer.
  """

  def __init__(self, deadline: float = DEADLINE_SECONDS, startup: float = 120.0):
    self.deadline, self.startup = deadline, startup
    self._lock = threading.Lock()
    self._proc = None

  def _start(self) -> None:
    root = str(paths.ROOT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    code = "from rewards.tasks.math500 import _serve; _serve()"
    self._proc = subprocess.Popen([sys.executable, "-c", code],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, env=env, cwd=root)
    if self._read(self.startup) != "ready":
      self._stop()
      raise RuntimeError("the math-verify worker process did not start")

  def _read(self, timeout: float):
    ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
    if not ready:
      return None
    line = self._proc.stdout.readline()
    return json.loads(line) if line else None

  def _stop(self) -> None:
    if self._proc is not None:
      self._proc.kill()
      self._proc.wait()
    self._proc = None

  def __call__(self, gold: str, predicted: str) -> bool:
    with self._lock:
      if self._proc is None or self._proc.poll() is not None:
        self._start()
      try:
        self._proc.stdin.write((json.dumps([gold, predicted]) + "\n").encode())
        self._proc.stdin.flush()
        result = self._read(self.deadline)
      except (OSError, ValueError):  # the worker died on this answer
        result = None
      if result is None:
        self._stop()
      return bool(result)


def _serve() -> None:
  """The worker's loop: [gold, predicted] lines in, true/false lines out."""
  import math_verify  # noqa: F401  (the slow import, before saying ready)

  print(json.dumps("ready"), flush=True)
  for line in sys.stdin:
    try:
      gold, predicted = json.loads(line)
      result = _equivalent_here(gold, predicted)
    except Exception:  # math-verify and sympy raise many kinds on hostile input
      result = False
    print(json.dumps(bool(result)), flush=True)


JUDGE = Judge()
