"""Does a wrong answer mix two right ones? The failure MRO exists for, measured.

A few-step sampler commits several tokens per step, each from its own marginal. Where a
problem has several valid answers, tokens of different answers can end up side by side:
the result is no answer at all. These functions tell such a *mixed* failure from other
failures, for the tasks where the valid answers can be enumerated.

Sudoku (`sudoku_kind`): a wrong grid is `mixed` when it keeps the givens and every empty
cell holds the digit that one of two solutions has there, taking cells from both (only
possible when the puzzle has several solutions); `other` otherwise.

Countdown (`countdown_kind`): the valid answers are every expression tree over the
numbers (each once, + - * /, any operand order) whose exact value is the target. A
response's *parts* are the operations it writes, as values `a op b = c`: the steps of
its think part (`0100-0093=0007`) and those of its answer expression (evaluated in
tree order). A wrong response is
- `empty`: no part parses;
- `one`: all of its parts are operations of one valid answer (a partial or garbled
  copy of one answer);
- `mixed`: no single valid answer has all its parts, but two together do, and it takes
  at least one part only the first has and one only the second has;
- `other`: some part belongs to no valid answer, or more than two answers are needed.
`crossover` is a stricter, token-level check: the response text has the same length
as the compact texts of two valid answers and equals one of them at every character,
without being either (fixed-width numbers make characters line up).

`summarize` counts the kinds over the generations file of `mro eval --out`
(experiments/bench/mixing.py prints it per setting).
"""

from __future__ import annotations

import fractions
import functools
import itertools
import re
from collections.abc import Sequence
from typing import Any

from rewards.tasks import expression, formats
from rewards.tasks.base import extract_answer_text
from rewards.tasks.sudoku import keeps_givens, solutions

MAX_COUNTDOWN_NUMBERS = 4  # 4 numbers: 7680 trees; 5 would be 430k per problem
_STEP = re.compile(r"\s*(\d+)\s*([-+*/])\s*(\d+)\s*=\s*(\d+)\s*")
_THINK = re.compile(r"<think>(.*?)</think>", re.S)

Step = tuple[fractions.Fraction, str, fractions.Fraction, fractions.Fraction]


# --- Sudoku -----------------------------------------------------------------------------


def sudoku_kind(puzzle: str, grid: str | None) -> str:
  """`no_answer`, `solved`, `mixed` or `other` (see the module docstring)."""
  if grid is None:
    return "no_answer"
  sols = solutions(puzzle)
  if grid in sols:
    return "solved"
  if not keeps_givens(puzzle, grid):
    return "other"
  empty = [i for i, d in enumerate(puzzle) if d == "0"]
  for a, b in itertools.combinations(sols, 2):
    if all(grid[i] in (a[i], b[i]) for i in empty):
      return "mixed"
  return "other"


# --- Countdown --------------------------------------------------------------------------


@functools.cache
def _trees(numbers: tuple[int, ...], mask: int) -> tuple[tuple[fractions.Fraction, tuple], ...]:
  """(exact value, tree) of every expression over the numbers in `mask`, each once."""
  if mask & (mask - 1) == 0:
    x = numbers[mask.bit_length() - 1]
    return ((fractions.Fraction(x), ("num", x)),)
  out = []
  sub = (mask - 1) & mask
  while sub:  # every ordered split: both operand orders of + and * are listed
    for (va, a), (vb, b) in itertools.product(_trees(numbers, sub), _trees(numbers, mask ^ sub)):
      out += [(va + vb, ("+", a, b)), (va - vb, ("-", a, b)), (va * vb, ("*", a, b))]
      if vb:
        out.append((va / vb, ("/", a, b)))
    sub = (sub - 1) & mask
  return tuple(out)


@functools.cache
def countdown_solutions(numbers: tuple[int, ...], target: int) -> tuple[tuple, ...]:
  """Every distinct expression tree over `numbers` (each once) whose value is `target`."""
  if not 1 <= len(numbers) <= MAX_COUNTDOWN_NUMBERS:
    raise ValueError(f"countdown_solutions: 1 to {MAX_COUNTDOWN_NUMBERS} numbers, got "
                     f"{len(numbers)} (the enumeration is exponential in the count)")
  seen, out = set(), []
  for value, tree in _trees(tuple(numbers), (1 << len(numbers)) - 1):
    if value == target and tree not in seen:
      seen.add(tree)
      out.append(tree)
  return tuple(out)


def tree_steps(node) -> list[Step]:
  """The operations of a tree in evaluation order, as exact values."""
  if node[0] == "num":
    return []
  op, left, right = node
  values = (expression.evaluate(left), op, expression.evaluate(right),
            expression.evaluate(node))
  return tree_steps(left) + tree_steps(right) + [values]


def response_parts(text: str) -> tuple[list[Step], bool]:
  """(the operations a response writes: think steps, then its answer's, as values;
  whether every think step and the answer parsed)."""
  parts, clean = [], True
  think = _THINK.search(text)
  for item in (think.group(1).split(",") if think and think.group(1).strip() else []):
    m = _STEP.fullmatch(item)
    if m is None:
      clean = False
      continue
    a, op, b, c = m.groups()
    parts.append((fractions.Fraction(int(a)), op, fractions.Fraction(int(b)),
                  fractions.Fraction(int(c))))
  answer = extract_answer_text(text)
  try:
    parts += tree_steps(expression.parse(answer)) if answer is not None else []
  except (expression.ExpressionError, ZeroDivisionError):
    clean = False
  return parts, clean and answer is not None


def compact_text(node, width: int, full: bool = True) -> str:
  """A valid answer as the compact format writes it: think steps zero-padded to `width`,
  the answer with every inner operation parenthesized (`full`) or the fewest."""
  return formats.compact_response(expression.to_text(node, full=full),
                                  ",".join(expression.steps(node, width=width)))


def _crossover(text: str, targets: Sequence[str]) -> bool:
  same = [t for t in set(targets) if len(t) == len(text) and t != text]
  for a, b in itertools.combinations(same, 2):
    if all(c in (x, y) for c, x, y in zip(text, a, b)):
      return True
  return False


def countdown_kind(numbers: Sequence[int], target: int, text: str, width: int = 4,
                   full: bool = True) -> dict[str, Any]:
  """{"kind": solved | empty | one | mixed | other, "crossover": bool, "solutions": count}
  for a compact-format response (think numbers `width` digits wide, answers `full`y
  parenthesized, as `compact_text`); see the module docstring."""
  trees = countdown_solutions(tuple(numbers), target)
  answer = extract_answer_text(text)
  if answer is not None and expression.check_countdown(answer, list(numbers), target) == "ok":
    return {"kind": "solved", "crossover": False, "solutions": len(trees)}
  parts = set(response_parts(text)[0])
  per_tree = [set(tree_steps(t)) for t in trees]
  crossover = _crossover(text, [compact_text(t, width, full) for t in trees])
  kind = "empty" if not parts else "other"
  if parts and any(parts <= s for s in per_tree):
    kind = "one"
  elif parts:
    for a, b in itertools.combinations(per_tree, 2):
      if parts <= a | b and parts & (a - b) and parts & (b - a):
        kind = "mixed"
        break
  return {"kind": kind, "crossover": crossover, "solutions": len(trees)}


# --- over an eval's generations ----------------------------------------------------------


def failure_kind(task, example, text: str) -> dict[str, Any] | None:
  """The kind of `text` as an answer to `example` (None for tasks not measured here)."""
  if task.name == "sudoku":
    return {"kind": sudoku_kind(example.meta["puzzle"], task.extract_answer(text)),
            "solutions": example.meta["n_solutions"]}
  if task.name == "countdown" and example.meta.get("style") == "compact" \
      and len(example.meta["numbers"]) <= MAX_COUNTDOWN_NUMBERS:
    return countdown_kind(example.meta["numbers"], example.meta["target"], text,
                          task.prompt_width + 1)
  return None


def summarize(task, examples, gens) -> dict[str, Any]:
  """Counts over one setting's generations (rows with `index` and `output`): how many
  were wrong, and of those how many of each kind; `several` restricts to problems with
  more than one valid answer, `crossover` counts token-level mixes (Countdown)."""
  counts: dict[str, Any] = {"n": 0, "wrong": 0, "kinds": {}, "several": {"n": 0, "wrong": 0,
                                                                         "kinds": {}},
                            "crossover": 0}
  for g in gens:
    info = failure_kind(task, examples[g["index"]], g["output"])
    if info is None:
      continue
    for scope in ([counts, counts["several"]] if info["solutions"] > 1 else [counts]):
      scope["n"] += 1
      if info["kind"] != "solved":
        scope["wrong"] += 1
        scope["kinds"][info["kind"]] = scope["kinds"].get(info["kind"], 0) + 1
    counts["crossover"] += bool(info.get("crossover"))
  return counts
