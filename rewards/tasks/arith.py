"""Multi-digit addition and multiplication with a worked scratchpad.

Compact format (no spaces: with one token per digit, every character is a token). Fixed
width: the operands are zero-padded to the task's widest operand (5 digits for sums, 3 for
products by default) and every scratchpad number to its own fixed width, and the steps go
most significant first, so the k-th digit of a step sits at a fixed offset from the k-th
digit of the operands and every copy keeps its order (a bidirectional model reads digits
by position, not by counting). The answer is zero-padded too (the scorer reads numbers).

  addition        prompt `00478+00365=`
                  target `<think>0+0+0=00,0+0+0=00,4+3+1=08,7+6+1=14,8+5+0=13</think>`
                         `<answer>000843</answer>`
    One step per column, most significant first: `x+y+c=s`, x and y the column digits,
    c the carry in from the column to the right, s the column sum as two digits: its
    second digit is the answer digit, its first the carry out. The answer is the first
    step's carry followed by every step's answer digit.

  multiplication  prompt `478*365=`
                  target `<think>3>143400=174470,6>028680=031070,5>002390</think>`
                         `<answer>174470</answer>`
    One step per digit d of the second operand, most significant first: `d>P`, P the
    partial product a*d*10^j (6 digits for 3-digit operands); every step but the last
    (the units digit's) ends with `=S`, S the sum of P and the partials to its right.
    The answer is the first step's sum.

  Sizes with the defaults: at most 54 tokens of target (tags as one token each).

Protocol format: the d1 math prompt with "What is A + B?" / "What is A * B?", the steps
in words in `<reasoning>`, the result boxed in `<answer>`.

Held-out split: by SHA-256 of the unordered operand pair (10% test, 5% validation), so
a pair held out for one operation is never trained on, in either order, with either.

Scoring: the number in the last `\\boxed{}`, else `<answer>`, else the last number of the
text, compared exactly. `verify` recomputes a op b from the problem's operands.
`digit_accuracy` is the share of right-aligned digit positions that match.
"""

from __future__ import annotations

import dataclasses
import random
from typing import ClassVar

from mro.messages import quoted

from . import formats
from .base import (Example, check_limit, check_split, check_style, hashed_split,
                   register)
from .numeric import numeric_answer

OPS = ("+", "*")
TEST_FRACTION, VALIDATION_FRACTION = 0.10, 0.05
DEFAULT_LIMITS = {"train": 10000, "validation": 256, "test": 256}
MAX_CONSECUTIVE_REJECTS = 100000


def compute(a: int, op: str, b: int) -> int:
  if op == "+":
    return a + b
  if op == "*":
    return a * b
  raise ValueError(f"unknown operation {quoted(op)}; choose one of {OPS}")


def addition_steps(a: int, b: int, width: int = 0) -> list[str]:
  """One `x+y+c=s` step per column, least significant first (the protocol's order), over
  max(width, digits) columns: x, y the column digits, c the carry in, s two digits."""
  n = max(width, len(str(a)), len(str(b)))
  xs, ys = str(a).zfill(n)[::-1], str(b).zfill(n)[::-1]
  steps, carry = [], 0
  for x, y in zip(map(int, xs), map(int, ys)):
    total = x + y + carry
    steps.append(f"{x}+{y}+{carry}={total:02d}")
    carry = total // 10
  return steps


def multiplication_steps(a: int, b: int, width: int = 0) -> list[tuple[int, int, int]]:
  """(d, partial, running) per digit d of b over max(width, digits) digits, least
  significant first: partial = a * d * 10^j, running = the sum of partials so far."""
  digits = str(b).zfill(max(width, len(str(b))))[::-1]
  out, running = [], 0
  for j, d in enumerate(map(int, digits)):
    partial = a * d * 10**j
    running += partial
    out.append((d, partial, running))
  return out


def compact_target(a: int, op: str, b: int, width: int) -> str:
  """The fixed-width compact target: every number zero-padded, steps most significant
  first, so the k-th digit of a step lines up with the k-th digit of the operands."""
  if op == "+":
    steps = addition_steps(a, b, width)[::-1]
    result = str(a + b).zfill(len(steps) + 1)
  else:
    n = 2 * max(width, len(str(a)), len(str(b)))
    rows = multiplication_steps(a, b, width)
    steps = [f"{d}>{partial:0{n}d}" + (f"={running:0{n}d}" if j else "")
             for j, (d, partial, running) in enumerate(rows)][::-1]
    result = f"{a * b:0{n}d}"
  return formats.compact_response(result, ",".join(steps))


def protocol_reasoning(a: int, op: str, b: int) -> str:
  if op == "+":
    lines = []
    for i, step in enumerate(addition_steps(a, b), start=1):
      digits, total = step.split("=")
      x, y, c = digits.split("+")
      lines.append(f"Column {i} from the right: {x} + {y} + carry {c} = {int(total)}, "
                   f"write {total[1]}, carry {total[0]}.")
    return "\n".join(lines + [f"So {a} + {b} = {a + b}."])
  lines = []
  for j, (d, partial, running) in enumerate(multiplication_steps(a, b)):
    lines.append(f"{a} * {d * 10**j} = {partial}.")
    if j:
      lines.append(f"Running total: {running - partial} + {partial} = {running}.")
  return "\n".join(lines + [f"So {a} * {b} = {a * b}."])


def split_of(a: int, b: int) -> str:
  """The split an (unordered) operand pair belongs to."""
  key = f"arith:{min(a, b)},{max(a, b)}"
  return hashed_split(key, test=TEST_FRACTION, validation=VALIDATION_FRACTION)


def _draw(rng: random.Random, digits: tuple[int, int]) -> int:
  k = rng.randint(*digits)
  return rng.randint(0 if k == 1 else 10**(k - 1), 10**k - 1)


def _check_digits(value: tuple[int, int], field: str) -> None:
  if len(value) != 2 or not 1 <= value[0] <= value[1] <= 18:
    raise ValueError(f"arith.{field}={value}: need 1 <= min <= max <= 18")


@dataclasses.dataclass(frozen=True)
class ArithTask:
  """Operands have a digit count drawn uniformly from `add_digits` / `mul_digits`."""

  name: str = "arith"
  ops: tuple[str, ...] = OPS
  add_digits: tuple[int, int] = (1, 5)
  mul_digits: tuple[int, int] = (1, 3)
  has_verifier: ClassVar[bool] = True

  def __post_init__(self):
    if not self.ops or any(op not in OPS for op in self.ops):
      raise ValueError(f"arith.ops={self.ops}: choose a non-empty subset of {OPS}")
    _check_digits(self.add_digits, "add_digits")
    _check_digits(self.mul_digits, "mul_digits")

  def width(self, op: str) -> int:
    """Digits of the compact prompt's zero-padded operands for `op`."""
    return (self.add_digits if op == "+" else self.mul_digits)[1]

  def generate(self, split: str, count: int, seed: int = 0) -> list[tuple[int, str, int]]:
    """`count` distinct (a, op, b) problems of `split`."""
    check_split(split)
    rng = random.Random(f"arith:{split}:{seed}")
    seen: set[tuple[int, str, int]] = set()
    out = []
    rejects = 0
    while len(out) < count:
      op = rng.choice(self.ops)
      digits = self.add_digits if op == "+" else self.mul_digits
      problem = (_draw(rng, digits), op, _draw(rng, digits))
      if problem in seen or split_of(problem[0], problem[2]) != split:
        rejects += 1
        if rejects > MAX_CONSECUTIVE_REJECTS:
          raise ValueError(f"could only make {len(out)} distinct {split} problems; "
                           "widen the digit ranges or ask for fewer")
        continue
      rejects = 0
      seen.add(problem)
      out.append(problem)
    return out

  def examples(self, split: str, *, path: str | None = None, limit: int | None = None,
               seed: int = 0, style: str = "compact") -> list[Example]:
    """Generated problems of `split` (seed -> same list; a smaller limit gives a
    prefix). There is no file format: `path` must be None."""
    check_split(split)
    check_style(style)
    check_limit(limit)
    if path is not None:
      raise ValueError("the arith task is generated; it reads no file (path must be None)")
    problems = self.generate(split, DEFAULT_LIMITS[split] if limit is None else limit, seed)
    return [self._example(f"{self.name}-{split}-{i:05d}", a, op, b, style)
            for i, (a, op, b) in enumerate(problems)]

  def _example(self, id_: str, a: int, op: str, b: int, style: str) -> Example:
    result = str(compute(a, op, b))
    meta = {"style": style, "a": a, "op": op, "b": b}
    if style == "compact":
      width = self.width(op)
      return Example(id_, f"{a:0{width}d}{op}{b:0{width}d}=", compact_target(a, op, b, width),
                     result, meta)
    prompt = formats.protocol_prompt(formats.D1_MATH_SYSTEM_PROMPT, f"What is {a} {op} {b}?")
    return Example(id_, prompt,
                   formats.protocol_response(protocol_reasoning(a, op, b), result),
                   result, meta)

  def group(self, example: Example) -> str | None:
    """"addition" or "multiplication": `mro eval` reports the two apart."""
    op = example.meta.get("op")
    return None if op is None else "addition" if op == "+" else "multiplication"

  def extract_answer(self, text: str) -> str | None:
    return numeric_answer(text)

  def score(self, example: Example, text: str) -> dict[str, float]:
    found = self.extract_answer(text)
    return {"correct": float(found == example.answer),
            "digit_accuracy": _digit_accuracy(found, example.answer),
            "answered": float(found is not None),
            "format": float(self.format_ok(text, style=example.meta.get("style")))}

  def verify(self, example: Example, text: str) -> bool:
    meta = example.meta
    return self.extract_answer(text) == str(compute(meta["a"], meta["op"], meta["b"]))

  def format_ok(self, text: str, *, style: str | None = None) -> bool:
    return formats.style_format_ok(text, style, compact_reasoning=True, protocol_boxed=True)


def _digit_accuracy(found: str | None, answer: str) -> float:
  if found is None:
    return 0.0
  width = max(len(found), len(answer))
  a, b = found.rjust(width), answer.rjust(width)
  return sum(x == y for x, y in zip(a, b)) / width


register(ArithTask())
