"""Multi-digit addition and multiplication with a worked scratchpad.

Compact format (no spaces: with one token per digit, every character is a token). All
intermediate numbers are written least-significant digit first, so each digit depends
only on digits already to its left plus a carry: the order in which a left-to-right
(semi-autoregressive) decoder commits them.

  addition        prompt `478+365=`
                  target `<think>8+5+0=13,7+6+1=14,4+3+1=08</think><answer>843</answer>`
    One step per column, least significant first: `x+y+c=s`, x and y the column digits
    (0 past the end of the shorter operand), c the carry in, s the column sum as two
    digits: its second digit is the answer digit, its first the carry out. A final carry
    of 1 is the answer's leading digit.

  multiplication  prompt `478*365=`
                  target `<think>5>0932,6>08682=07013,3>004341=074471</think>`
                         `<answer>174470</answer>`
    One step per digit d of the second operand, least significant first: `d>P`, P the
    partial product a*d*10^j written least-significant first (it starts with j zeros);
    from the second step on, `=S` follows, S the running sum of the partial products so
    far, least-significant first. The answer is the final sum written normally.

  Sizes with the defaults (1-5 digit sums, 1-3 digit products): at most ~57 tokens of
  target for a 5+5-digit sum, ~47 for a 3x3-digit product (tags as one token each).

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


def addition_steps(a: int, b: int) -> list[str]:
  xs, ys = str(a)[::-1], str(b)[::-1]
  steps, carry = [], 0
  for i in range(max(len(xs), len(ys))):
    x = int(xs[i]) if i < len(xs) else 0
    y = int(ys[i]) if i < len(ys) else 0
    total = x + y + carry
    steps.append(f"{x}+{y}+{carry}={total:02d}")
    carry = total // 10
  return steps


def multiplication_steps(a: int, b: int) -> list[str]:
  steps, running = [], 0
  for j, digit in enumerate(str(b)[::-1]):
    d = int(digit)
    step = f"{d}>" + "0" * j + str(a * d)[::-1]
    running += a * d * 10**j
    if j:
      step += "=" + str(running)[::-1]
    steps.append(step)
  return steps


def compact_target(a: int, op: str, b: int) -> str:
  steps = addition_steps(a, b) if op == "+" else multiplication_steps(a, b)
  return formats.compact_response(str(compute(a, op, b)), ",".join(steps))


def protocol_reasoning(a: int, op: str, b: int) -> str:
  if op == "+":
    lines = []
    for i, step in enumerate(addition_steps(a, b), start=1):
      digits, total = step.split("=")
      x, y, c = digits.split("+")
      lines.append(f"Column {i} from the right: {x} + {y} + carry {c} = {int(total)}, "
                   f"write {total[1]}, carry {total[0]}.")
    return "\n".join(lines + [f"So {a} + {b} = {a + b}."])
  lines, running = [], 0
  for j, digit in enumerate(str(b)[::-1]):
    partial = a * int(digit) * 10**j
    lines.append(f"{a} * {int(digit) * 10**j} = {partial}.")
    if j:
      lines.append(f"Running total: {running} + {partial} = {running + partial}.")
    running += partial
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
      return Example(id_, f"{a}{op}{b}=", compact_target(a, op, b), result, meta)
    prompt = formats.protocol_prompt(formats.D1_MATH_SYSTEM_PROMPT, f"What is {a} {op} {b}?")
    return Example(id_, prompt,
                   formats.protocol_response(protocol_reasoning(a, op, b), result),
                   result, meta)

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
