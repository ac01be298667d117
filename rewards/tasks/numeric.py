"""Numbers in free text: find them, parse them exactly, print them canonically.

Used by the numeric tasks (arith, gsm8k) to read a model's final number. Rules:
- thousands separators are accepted only in proper groups of three ("1,000",
  "12,345,678"; LaTeX "1{,}000" and "1\\,000" too); "3,5" is two numbers, 3 and 5;
- a minus sign belongs to the number when it is not preceded by a word character or a
  closing bracket ("-3", "= -3", "(-3)", "{-3}", "-$3" are negative; "5-3" and "x-3" are
  a subtraction, so the number read is 3). Unicode minus (U+2212) counts as "-".
  Unlike d1's regex, signs are kept: GSM8K has negative answers;
- a leading "$" is skipped; units, "%" and words around the number are ignored;
- values are `decimal.Decimal` (exact: "5", "5.0" and "5.00" are equal; no float
  rounding, no overflow). Strings longer than `MAX_NUMBER_CHARS` are ignored.
- cost: only the last `MAX_SCAN_CHARS` characters of a text are searched for its last
  number, from the first character in that window that cannot belong to a number (so a
  number is never cut in half; a window that is one unbroken run of digits and
  separators holds no number). Scoring a response is therefore linear in its length,
  whatever it holds (the number pattern alone is quadratic on long runs like
  "1,000,000,...").
"""

from __future__ import annotations

import decimal
import re

from .base import last_answer_tag, last_boxed

MAX_NUMBER_CHARS = 64
MAX_SCAN_CHARS = 2048
_NUMBER_CHARS = frozenset("0123456789,.$-{}\\\u2212")

_NUMBER_RE = re.compile(
    r"(?:(?<![\w)\]}])(?P<sign>-))?\$?"
    r"(?P<num>[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?(?![0-9]|,[0-9])"
    r"|[0-9]+(?:\.[0-9]+)?|\.[0-9]+)")
_LATEX_THOUSANDS_RE = re.compile(r"(?<=[0-9])(?:\{,\}|\\,)(?=[0-9]{3})")


def _clean(text: str) -> str:
  text = text.replace("\u2212", "-").replace("\\$", "$").replace("\\!", "")
  return _LATEX_THOUSANDS_RE.sub(",", text)


def parse_number(text: str) -> decimal.Decimal | None:
  """The value of a string that is exactly one number (commas, sign, "$" allowed)."""
  text = _clean(text.strip())
  match = _NUMBER_RE.fullmatch(text)
  if match is None:
    return None
  return _to_decimal(match)


def _to_decimal(match: re.Match) -> decimal.Decimal | None:
  digits = match.group("num").replace(",", "")
  if len(digits) > MAX_NUMBER_CHARS:
    return None
  value = decimal.Decimal(digits)
  return -value if match.group("sign") else value


def _tail(text: str) -> str:
  """The last MAX_SCAN_CHARS characters of `text`, starting at a character that cannot be
  part of a number (the whole text when it is short)."""
  if len(text) <= MAX_SCAN_CHARS:
    return text
  window = text[-MAX_SCAN_CHARS:]
  for i, c in enumerate(window):
    if c not in _NUMBER_CHARS:
      return window[i:]
  return ""


def last_number(text: str) -> decimal.Decimal | None:
  """The last number written in `text` (see the module docstring), or None."""
  last = None
  for match in _NUMBER_RE.finditer(_clean(_tail(text))):
    last = match
  return None if last is None else _to_decimal(last)


def canonical(value: decimal.Decimal) -> str:
  """"1000", "-3", "2.5": no exponent, no trailing zeros, no "-0"."""
  if value == value.to_integral_value():
    return str(int(value))
  return format(value.normalize(), "f")


def number_string(text: str) -> str | None:
  """canonical(last_number(text)) or None: the form the numeric tasks compare."""
  value = last_number(text)
  return None if value is None else canonical(value)


def numeric_answer(text: str) -> str | None:
  """The number a response commits to, canonical: the last number inside the last
  balanced `\\boxed{}`, else inside the last `<answer>...</answer>`, else the last
  number anywhere in the text; None if there is none."""
  for source in (last_boxed(text), last_answer_tag(text), text):
    if source is not None:
      found = number_string(source)
      if found is not None:
        return found
  return None
