"""Arithmetic expressions for Countdown: a strict parser (never `eval`), exact values.

Accepted language (the strict reading of d1's character whitelist):

    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/") factor)*
    factor := NUMBER | "(" expr ")"
    NUMBER := "0" | [1-9][0-9]*

- characters: ASCII digits, `+ - * / ( )` and ASCII whitespace; nothing else (no `.`, `**`, `^`,
  `=`, `x`, letters, unicode operators);
- no unary operators: `-3+5`, `+3`, `2*-3` and `-(3-5)` are rejected, so a response
  cannot use a number the task did not give (e.g. negate one);
- no leading zeros (`007`), no implicit multiplication (`2(3)`), no empty parentheses;
- at most MAX_CHARS characters and MAX_DEPTH nested parentheses: anything longer is
  rejected before parsing, so adversarial input costs linear time and no recursion
  overflow. `9**9**9` is a syntax error, never a computation.

Values are `fractions.Fraction` (exact); division by zero is reported, not raised.
"""

from __future__ import annotations

import fractions
import re

from mro.messages import quoted

MAX_CHARS = 200
MAX_DEPTH = 16
PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}

# A node is ("num", int) or (op, left, right).
Node = tuple

_TOKEN_RE = re.compile(r"[ \t\r\n]*(?:([0-9]+)|([-+*/()]))")
_ALLOWED_RE = re.compile(r"[0-9 \t\r\n+\-*/()]*")


class ExpressionError(ValueError):
  """The text is not an expression of the accepted language."""


def tokenize(text: str) -> list[str]:
  if len(text) > MAX_CHARS:
    raise ExpressionError(f"expression longer than {MAX_CHARS} characters")
  if not _ALLOWED_RE.fullmatch(text):
    bad = sorted(set(re.sub(r"[0-9 \t\r\n+\-*/()]", "", text)))
    raise ExpressionError(f"characters not allowed: {quoted(''.join(bad))}")
  tokens = []
  pos = 0
  text = text.rstrip(" \t\r\n")
  while pos < len(text):
    match = _TOKEN_RE.match(text, pos)
    if match is None:  # unreachable after the whitelist check; kept as a guard
      raise ExpressionError(f"unexpected text at {pos}")
    number = match.group(1)
    if number is not None and len(number) > 1 and number[0] == "0":
      raise ExpressionError(f"number with a leading zero: {number}")
    tokens.append(match.group(1) or match.group(2))
    pos = match.end()
  return tokens


class _Parser:

  def __init__(self, tokens: list[str]):
    self.tokens = tokens
    self.pos = 0
    self.depth = 0

  def peek(self) -> str | None:
    return self.tokens[self.pos] if self.pos < len(self.tokens) else None

  def take(self) -> str:
    token = self.peek()
    if token is None:
      raise ExpressionError("unexpected end of expression")
    self.pos += 1
    return token

  def expr(self) -> Node:
    node = self.term()
    while self.peek() in ("+", "-"):
      op = self.take()
      node = (op, node, self.term())
    return node

  def term(self) -> Node:
    node = self.factor()
    while self.peek() in ("*", "/"):
      op = self.take()
      node = (op, node, self.factor())
    return node

  def factor(self) -> Node:
    token = self.take()
    if token.isdigit():
      return ("num", int(token))
    if token == "(":
      self.depth += 1
      if self.depth > MAX_DEPTH:
        raise ExpressionError(f"more than {MAX_DEPTH} nested parentheses")
      node = self.expr()
      if self.take() != ")":
        raise ExpressionError("unbalanced parentheses")
      self.depth -= 1
      return node
    raise ExpressionError(f"expected a number or '(', got {quoted(token)}")


def parse(text: str) -> Node:
  """The syntax tree of `text`; ExpressionError if it is not in the language."""
  tokens = tokenize(text)
  if not tokens:
    raise ExpressionError("empty expression")
  parser = _Parser(tokens)
  node = parser.expr()
  if parser.peek() is not None:
    raise ExpressionError(f"unexpected {quoted(parser.peek())} after a complete expression")
  return node


def literals(node: Node) -> list[int]:
  if node[0] == "num":
    return [node[1]]
  return literals(node[1]) + literals(node[2])


def evaluate(node: Node) -> fractions.Fraction:
  """The exact value; ExpressionError on division by zero."""
  if node[0] == "num":
    return fractions.Fraction(node[1])
  op, left, right = node
  a, b = evaluate(left), evaluate(right)
  if op == "+":
    return a + b
  if op == "-":
    return a - b
  if op == "*":
    return a * b
  if b == 0:
    raise ExpressionError("division by zero")
  return a / b


def to_text(node: Node, *, spaced: bool = False, full: bool = False) -> str:
  """The expression with the fewest parentheses that keep its value and shape, or with
  `full`, every operation but the outermost in parentheses (one shape per tree)."""
  if node[0] == "num":
    return str(node[1])
  op, left, right = node
  left_text = to_text(left, spaced=spaced, full=full)
  right_text = to_text(right, spaced=spaced, full=full)
  if left[0] != "num" and (full or PRECEDENCE[left[0]] < PRECEDENCE[op]):
    left_text = f"({left_text})"
  if right[0] != "num" and (full or PRECEDENCE[right[0]] < PRECEDENCE[op] or
                            (PRECEDENCE[right[0]] == PRECEDENCE[op] and op in "-/")):
    right_text = f"({right_text})"
  return f"{left_text} {op} {right_text}" if spaced else f"{left_text}{op}{right_text}"


def value_text(value: fractions.Fraction, width: int = 0) -> str:
  """`value` as text; a non-negative integer is zero-padded to at least `width` digits."""
  if value.denominator != 1:
    return str(value)
  return str(value.numerator).zfill(width) if value >= 0 else str(value.numerator)


def steps(node: Node, *, spaced: bool = False, width: int = 0) -> list[str]:
  """The operations of the tree in evaluation order, e.g. ["100-93=7", "30-7=23"]; with
  `width`, non-negative integers are zero-padded (["0100-0093=0007", ...])."""
  if node[0] == "num":
    return []
  op, left, right = node
  a, b, c = (value_text(v, width) for v in (evaluate(left), evaluate(right), evaluate(node)))
  line = f"{a} {op} {b} = {c}" if spaced else f"{a}{op}{b}={c}"
  return (steps(left, spaced=spaced, width=width) + steps(right, spaced=spaced, width=width)
          + [line])


def check_countdown(text: str, numbers: list[int], target: int) -> str:
  """"ok", or why not: "syntax", "numbers" (the multiset of literals differs from
  `numbers`), "division_by_zero", "value" (further than 1e-5 from `target`)."""
  try:
    node = parse(text)
  except ExpressionError:
    return "syntax"
  if sorted(literals(node)) != sorted(numbers):
    return "numbers"
  try:
    value = evaluate(node)
  except ExpressionError:
    return "division_by_zero"
  return "ok" if abs(value - target) < fractions.Fraction(1, 100000) else "value"
