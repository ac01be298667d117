"""Countdown: reach a target from 3 (or 4) numbers, each used exactly once, with + - * /.

Formats
  compact   prompt `Make 023 from 030,100,093`
            target `<think>0100-0093=0007,0030-0007=0023</think><answer>30-(100-93)</answer>`
            Fixed width, so that a digit's place is its position: the prompt's numbers
            are zero-padded to the widest possible one (3 digits by default), the think
            part's to one digit more (intermediates may be products). The think part
            lists the operations of the cheapest solution (see `OP_COST`) in evaluation
            order; the answer is that solution with every inner operation in
            parentheses, written without padding (the scorer refuses leading zeros).
  protocol  d1's Countdown system prompt + "\\n\\nNumbers: [30, 100, 93]\\nTarget: 23";
            target `<reasoning>` with the same steps, then `<answer>\\n\\boxed{30 - (100 -
            93)}\\n</answer>`.

Generator (only solvable instances, as TinyZero/d1): numbers uniform in
`number_range` (1-100, repeats allowed), then a target drawn uniformly from the
integers in `target_range` (1-100) that some expression reaches (intermediate values
may be fractions). The solution shown is the cheapest: non-negative integer
intermediates, then the fewest costly operations (+ and - before * before /), then
the smallest intermediates.

Held-out split: by SHA-256 of the sorted number multiset (10% test, 5% validation):
a multiset of numbers belongs to one split only, whatever the target.

Scoring (see `expression.py` for the accepted language): the answer is the expression
in the last `\\boxed{}` else `<answer>`; correct iff it parses, its integer literals
are exactly the given numbers (each once, no extras), no division by zero, and its
value is within 1e-5 of the target. Unary minus is rejected. `verify` is the same
check: it needs only the numbers and target of the problem, no reference solution.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, ClassVar

from mro.messages import quoted

from . import expression, formats
from .base import (Example, check_limit, check_split, check_style, extract_answer_text,
                   hashed_split, register)
from .data import read_jsonl_lines

TEST_FRACTION, VALIDATION_FRACTION = 0.10, 0.05
# The exhaustive solver is exponential in the count (5 numbers: ~0.1 s, 6: ~3 s, 7: ~17 s),
# so a problem may have at most this many numbers (data rows included).
MAX_NUMBERS = 5
# Digits of a number or target (data rows included), checked on the text before it is
# parsed: the solver's cost grows with the numbers' size (five 4000-digit numbers: ~27 s),
# and Python refuses to parse more than 4300 digits.
MAX_DIGITS = 18
DEFAULT_LIMITS = {"train": 10000, "validation": 256, "test": 256}
MAX_CONSECUTIVE_REJECTS = 100000

SYSTEM_PROMPT = (
    "Using only the provided numbers, create an arithmetic expression that evaluates to "
    "exactly the provided target number. You may use the operations +, -, *, and / as "
    "needed, but each number must be used exactly once. Think step-by-step. After "
    "reasoning, provide only your final expression inside \\boxed{} tags without "
    "including an equals sign or the target number. For example: \\boxed{a + b * c}"
    + formats.D1_BOXED_FORMAT)

# Values are exact fractions kept as (numerator, denominator) int pairs in lowest terms,
# denominator > 0; a table maps a value to (cost, node). The cost orders solutions by how
# easy they are to write out: (any intermediate not a non-negative integer, the summed
# operation costs, the largest intermediate). The shown solution is the cheapest one.
_Cost = tuple[int, int, int]
_Table = dict[tuple[int, int], tuple[_Cost, expression.Node]]
# + and - are cheapest, then *, then /: a small model learns a consistent preference.
OP_COST = {"+": 1, "-": 1, "*": 2, "/": 3}


def _combine(tables: dict[int, _Table], mask: int,
             accept: Callable[[int], bool] | None) -> _Table:
  """All values of expressions over the numbers in `mask` (split into two non-empty
  halves in every way), each with its cheapest expression. With `accept`, keep only
  integers v with accept(v)."""
  out: _Table = {}
  sub = (mask - 1) & mask
  while sub:
    other = mask ^ sub
    if sub < other:
      for (p1, q1), (c1, n1) in tables[sub].items():
        for (p2, q2), (c2, n2) in tables[other].items():
          candidates = [(p1 * q2 + p2 * q1, q1 * q2, ("+", n1, n2)),
                        (p1 * p2, q1 * q2, ("*", n1, n2)),
                        (p1 * q2 - p2 * q1, q1 * q2, ("-", n1, n2)),
                        (p2 * q1 - p1 * q2, q1 * q2, ("-", n2, n1))]
          if p2:
            candidates.append((p1 * q2, q1 * p2, ("/", n1, n2)))
          if p1:
            candidates.append((p2 * q1, q2 * p1, ("/", n2, n1)))
          for p, q, node in candidates:
            if q < 0:
              p, q = -p, -q
            if accept is not None:
              if p % q or not accept(p // q):
                continue
              key = (p // q, 1)
            else:
              g = math.gcd(p, q)
              key = (p // g, q // g)
            plain = key[1] == 1 and key[0] >= 0
            cost = (max(c1[0], c2[0], int(not plain)), c1[1] + c2[1] + OP_COST[node[0]],
                    max(c1[2], c2[2], abs(key[0]) // key[1]))
            if key not in out or cost < out[key][0]:
              out[key] = (cost, node)
    sub = (sub - 1) & mask
  return out


def reachable(numbers: list[int], lo: int, hi: int) -> dict[int, expression.Node]:
  """{target: a solution} for every integer target in [lo, hi] reachable by using each
  of `numbers` exactly once with + - * / (fractional intermediates allowed)."""
  n = len(numbers)
  if n == 0:
    return {}
  full = (1 << n) - 1
  tables: dict[int, _Table] = {1 << i: {(x, 1): ((0, 0, 0), ("num", x))}
                               for i, x in enumerate(numbers)}
  if n == 1:
    return {numbers[0]: ("num", numbers[0])} if lo <= numbers[0] <= hi else {}
  for mask in sorted(range(1, full), key=lambda m: bin(m).count("1")):
    if bin(mask).count("1") > 1:
      tables[mask] = _combine(tables, mask, None)
  top = _combine(tables, full, lambda v: lo <= v <= hi)
  return {key[0]: node for key, (_, node) in sorted(top.items())}


def check_count(numbers: Sequence, where: str = "countdown") -> None:
  if not 1 <= len(numbers) <= MAX_NUMBERS:
    raise ValueError(f"{where}: a Countdown problem has 1 to {MAX_NUMBERS} numbers, got "
                     f"{len(numbers)} (the exhaustive solver is exponential in the count)")


def solve(numbers: list[int], target: int) -> expression.Node | None:
  """One solution for an integer `target`, or None if there is none (at most
  MAX_NUMBERS numbers: the search is exhaustive)."""
  check_count(numbers)
  return reachable(numbers, target, target).get(target)


def _parse_numbers(text: object, where: str) -> list[int]:
  if not isinstance(text, str):
    raise ValueError(f"{where}: 'input' must be a string like \"30,100,93\", got {quoted(text)}")
  parts = [p.strip() for p in text.split(",")]
  if not all(p.isdigit() and p.isascii() for p in parts):
    raise ValueError(f"{where}: 'input' must be comma-separated non-negative integers, "
                     f"got {quoted(text)}")
  check_count(parts, where)  # before any number is parsed or solved
  for p in parts:
    _check_digits(p, "'input'", where)
  return [int(p) for p in parts]


def _check_digits(text: str, field: str, where: str) -> None:
  digits = len(text.lstrip("-").lstrip("0"))
  if digits > MAX_DIGITS:
    raise ValueError(f"{where}: {field} has a number of {digits} digits; a Countdown number "
                     f"has at most {MAX_DIGITS}")


def _parse_target(value: object, where: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, str)):
    raise ValueError(f"{where}: 'output' must be an integer, got {quoted(value)}")
  text = str(value).strip()
  if not (text.lstrip("-").isdigit() and text.isascii()):
    raise ValueError(f"{where}: 'output' must be an integer, got {quoted(value)}")
  _check_digits(text, "'output'", where)
  return int(text)


def read_jsonl(path: str) -> list[tuple[list[int], int]]:
  """(numbers, target) from JSON lines `{"input": "30,100,93", "output": "23"}`."""
  if not Path(path).is_file():
    raise ValueError(f"countdown JSONL file not found: {path}")
  instances = []
  for number, row in read_jsonl_lines(Path(path)):
    where = f"{path} line {number}"
    for key in ("input", "output"):
      if key not in row:
        raise ValueError(f"{where}: missing key {quoted(key)} (expected input and output)")
    numbers = _parse_numbers(row["input"], where)
    instances.append((numbers, _parse_target(row["output"], where)))
  return instances


def _check_range(value: tuple[int, int], field: str, low: int) -> None:
  if len(value) != 2 or not low <= value[0] <= value[1] < 10**MAX_DIGITS:
    raise ValueError(f"countdown.{field}={quoted(value)}: need {low} <= min <= max < "
                     f"10**{MAX_DIGITS}")


@dataclasses.dataclass(frozen=True)
class CountdownTask:
  """`sizes`: how many numbers an instance has (one drawn uniformly per instance)."""

  name: str = "countdown"
  sizes: tuple[int, ...] = (3,)
  number_range: tuple[int, int] = (1, 100)
  target_range: tuple[int, int] = (1, 100)
  has_verifier: ClassVar[bool] = True

  def __post_init__(self):
    if not self.sizes or not all(2 <= s <= 5 for s in self.sizes):
      raise ValueError(f"countdown.sizes={self.sizes}: each size must be in 2..5")
    _check_range(self.number_range, "number_range", 0)
    _check_range(self.target_range, "target_range", -10**9)

  @property
  def prompt_width(self) -> int:
    """Digits of the compact prompt's zero-padded numbers (the widest possible one)."""
    return len(str(max(self.number_range[1], abs(self.target_range[0]),
                       abs(self.target_range[1]))))

  def generate(self, split: str, count: int,
               seed: int = 0) -> list[tuple[list[int], int, expression.Node]]:
    """`count` distinct solvable (numbers, target, solution) instances of `split`."""
    check_split(split)
    rng = random.Random(f"countdown:{split}:{seed}")
    seen: set[tuple[tuple[int, ...], int]] = set()
    out = []
    rejects = 0
    while len(out) < count:
      numbers = [rng.randint(*self.number_range) for _ in range(rng.choice(self.sizes))]
      key = tuple(sorted(numbers))
      targets = {}
      if split_of(numbers) == split:
        targets = reachable(numbers, *self.target_range)
      target = rng.choice(sorted(targets)) if targets else None
      if target is None or (key, target) in seen:
        rejects += 1
        if rejects > MAX_CONSECUTIVE_REJECTS:
          raise ValueError(f"could only make {len(out)} distinct {split} instances; "
                           "widen the ranges or ask for fewer")
        continue
      rejects = 0
      seen.add((key, target))
      out.append((numbers, target, targets[target]))
    return out

  def examples(self, split: str, *, path: str | None = None, limit: int | None = None,
               seed: int = 0, style: str = "compact") -> list[Example]:
    """Generated instances of `split` (seed -> same list; a smaller limit gives a
    prefix), or, with `path`, the rows of that JSONL file in order."""
    check_split(split)
    check_style(style)
    check_limit(limit)
    if path is not None:
      rows = [(nums, t, solve(nums, t)) for nums, t in read_jsonl(path)[:limit]]
    else:
      rows = self.generate(split, DEFAULT_LIMITS[split] if limit is None else limit, seed)
    return [self._example(f"{self.name}-{split}-{i:05d}", nums, t, node, style)
            for i, (nums, t, node) in enumerate(rows)]

  def _example(self, id_: str, numbers: list[int], target: int,
               node: expression.Node | None, style: str) -> Example:
    meta = {"style": style, "numbers": list(numbers), "target": target,
            "solvable": node is not None}
    answer = "" if node is None else expression.to_text(node, full=style == "compact")
    if style == "compact":
      width = self.prompt_width
      prompt = f"Make {target:0{width}d} from {','.join(f'{n:0{width}d}' for n in numbers)}"
      target_text = "" if node is None else formats.compact_response(
          answer, ",".join(expression.steps(node, width=width + 1)))
    else:
      prompt = formats.protocol_prompt(SYSTEM_PROMPT,
                                       f"Numbers: {list(numbers)}\nTarget: {target}")
      target_text = "" if node is None else formats.protocol_response(
          "\n".join(expression.steps(node, spaced=True)),
          expression.to_text(node, spaced=True))
    return Example(id_, prompt, target_text, answer, meta)

  def extract_answer(self, text: str) -> str | None:
    return extract_answer_text(text)

  def _status(self, example: Example, text: str) -> str:
    expr = self.extract_answer(text)
    if expr is None:
      return "no_answer"
    return expression.check_countdown(expr, list(example.meta["numbers"]),
                                      example.meta["target"])

  def score(self, example: Example, text: str) -> dict[str, float]:
    status = self._status(example, text)
    return {"correct": float(status == "ok"),
            "valid_expression": float(status in ("ok", "value")),
            "answered": float(status != "no_answer"),
            "format": float(self.format_ok(text, style=example.meta.get("style")))}

  def verify(self, example: Example, text: str) -> bool:
    return self._status(example, text) == "ok"

  def format_ok(self, text: str, *, style: str | None = None) -> bool:
    return formats.style_format_ok(text, style, compact_reasoning=True, protocol_boxed=True)


def split_of(numbers: list[int]) -> str:
  """The split a multiset of numbers belongs to."""
  key = "countdown:" + ",".join(map(str, sorted(numbers)))
  return hashed_split(key, test=TEST_FRACTION, validation=VALIDATION_FRACTION)


register(CountdownTask())
