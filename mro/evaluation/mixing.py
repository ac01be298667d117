"""Does a wrong answer mix two right ones? The failure MRO exists for, measured.

A few-step sampler commits several tokens per step, each from its own marginal. Where a
problem has several valid answers, tokens of different answers can end up side by side:
the result is no answer at all. These functions tell such a *mixed* failure from other
failures, for the tasks where the valid answers can be enumerated.

One comparison (`compare`) serves every measure. An output is cut into *units*, each
valid answer likewise, and each answer's *agreement* with the output is the set of the
output's units it has: with d1 the fewest units that no single answer has and d2 the
fewest that neither of two answers has, the output is
- `valid`: d1 = 0 (an answer has all of it);
- `mix`: d2 = 0 < d1: two answers together have every unit, neither alone does, so it
  takes at least one unit only the first has and one only the second has;
- `mix3`: every unit is some answer's, but no two answers have them all;
- `stray`: some unit is no answer's.
Units are *positions* (`compare`: the output and the answers of its length, compared
position by position) or *parts* (`compare_parts`: a set, where each answer has the parts
it contains). Positions are characters (`unit="chars"`) or the tokens of a model
directory's tokenizer (`unit=<directory>`, `splitter`). `mix_kind` runs the positional
comparison on texts.

Sudoku (`sudoku_kind`, characters): a wrong grid is `mixed` when every cell holds the
digit that one of two solutions has there, taking cells from both (only possible when
the puzzle has several solutions); `other` otherwise.

Countdown: the valid answers are every expression tree over the numbers (each once,
+ - * /, any operand order) whose exact value is the target; `renderings` writes them as
the compact training target does (think steps zero-padded to `width`, every inner
operation in parentheses), distinct texts, each with its solution up to commuting the
operands of + and * (its *class*). Two measures:
- `countdown_kind`, by parts: a response's parts are the operations it writes, as values
  `a op b = c`: the steps of its think part (`0100-0093=0007`) and those of its answer
  expression (evaluated in tree order). A wrong response is `empty` (no part parses),
  `one` (all its parts are operations of one valid answer: a partial or garbled copy),
  `mixed` (`mix` above) or `other`. Its `crossover` is the positional `mix` of the whole
  text against the renderings, in `unit` (fixed-width numbers make characters line up).
- `countdown_position_kind`, by positions: the positional kind of the whole text against
  the renderings of its length (`length` if none has it but the text keeps the compact
  layout, `malformed` if neither), with d1, d2, the pair of renderings shown (a covering
  pair with a nearest rendering in it, for a mix), `distinct` (some covering pair is two
  classes, not one solution in two operand orders), `loose` (d2 < d1) and `think_mix`
  (the think part, from its first `<think>` to its last `</think>`, is a `mix` of the
  renderings' think parts).

`summarize` counts the kinds over the generations file of `mro eval --out`
(experiments/bench/mixing.py prints it per setting); experiments/bench/countdown_mixing.py
counts `countdown_position_kind` in tokens.
"""

from __future__ import annotations

import fractions
import functools
import itertools
import re
from collections.abc import Callable, Collection, Hashable, Sequence
from typing import Any

from models.tokenizers import load_tokenizer
from rewards.tasks import expression, formats, get_task
from rewards.tasks.base import extract_answer_text
from rewards.tasks.sudoku import solutions

MAX_COUNTDOWN_NUMBERS = 4  # 4 numbers: 7680 trees; 5 would be 430k per problem
DIGITS = "0123456789"
_STEP = re.compile(r"\s*(\d+)\s*([-+*/])\s*(\d+)\s*=\s*(\d+)\s*")
_THINK = re.compile(r"<think>(.*?)</think>", re.S)  # the parts: the first think part
_THINK_SPAN = re.compile(r"<think>(.*)</think>", re.S)  # the positions: first to last tag

Step = tuple[fractions.Fraction, str, fractions.Fraction, fractions.Fraction]
Units = tuple[int, ...]


# --- units and the comparison ------------------------------------------------------------


@functools.cache
def splitter(unit: str = "chars") -> tuple[Callable[[str], Units], frozenset[int]]:
  """(text -> its positions, the ids of the ten digits): characters (`chars`: ids are code
  points) or the tokens of a model directory's tokenizer (one token per digit needed)."""
  if unit == "chars":
    return (lambda text: tuple(map(ord, text))), frozenset(map(ord, DIGITS))
  tok = load_tokenizer(unit)
  ids = [tok.encode(d) for d in DIGITS]
  if any(len(i) != 1 for i in ids):
    raise ValueError(f"unit {unit}: a digit is not one token of its tokenizer ({ids})")
  return functools.lru_cache(maxsize=None)(lambda text: tuple(tok.encode(text))), \
      frozenset(i[0] for i in ids)


def _decide(masks: dict[int, int], n: int, classes: Sequence[str] | None) -> dict[str, Any]:
  """The kind of an output of `n` units from each candidate's agreement mask (bit p: the
  candidate has unit p), with d1, d2, a best pair and `distinct` (module docstring)."""
  full = (1 << n) - 1
  best = max(masks, key=lambda i: masks[i].bit_count())
  d1 = n - masks[best].bit_count()
  info = {"d1": d1, "d2": d1, "pair": (best, best), "distinct": False}
  nearest = 0  # the larger agreement of the covering pair kept
  union = 0
  for i in masks:
    union |= masks[i]
  for i, j in itertools.combinations(masks, 2):
    d2 = n - (masks[i] | masks[j]).bit_count()
    if d2 < info["d2"]:
      info.update(d2=d2, pair=(i, j))
    if d2 == 0:  # a covering pair
      info["distinct"] |= classes is not None and classes[i] != classes[j]
      agree = max(masks[i].bit_count(), masks[j].bit_count())
      if agree > nearest:
        nearest = agree
        info["pair"] = (i, j)
  if d1 == 0:
    kind = "valid"
  elif info["d2"] == 0:
    kind = "mix"
  elif union == full:
    kind = "mix3"
  else:
    kind = "stray"
  return {"kind": kind, **info}


def compare(output: Sequence[Hashable], candidates: Sequence[Sequence[Hashable]],
            classes: Sequence[str] | None = None) -> dict[str, Any] | None:
  """How `output` stands to the `candidates` of its length, position by position: None if
  none has its length, else {"kind": valid | mix | mix3 | stray, "d1", "d2", "pair": (i, j)
  (for a mix, a covering pair with a nearest candidate in it), "distinct": some covering
  pair has two `classes`}."""
  same = [i for i, c in enumerate(candidates) if len(c) == len(output)]
  if not same:
    return None
  return _decide({i: sum(1 << p for p, (a, b) in enumerate(zip(output, candidates[i]))
                         if a == b) for i in same}, len(output), classes)


def compare_parts(parts: Collection[Hashable], candidates: Sequence[Collection[Hashable]],
                  classes: Sequence[str] | None = None) -> dict[str, Any] | None:
  """`compare` for unordered units: a candidate has each part it contains. None without
  parts or candidates."""
  order = list(parts)
  if not order or not candidates:
    return None
  return _decide({i: sum(1 << k for k, x in enumerate(order) if x in c)
                  for i, c in enumerate(candidates)}, len(order), classes)


def mix_kind(text: str, answers: Sequence[str], unit: str = "chars",
             classes: Sequence[str] | None = None) -> dict[str, Any] | None:
  """`compare` of a text with valid answers, both cut into `unit` positions (`splitter`);
  `pair` holds the two answers' texts."""
  split = splitter(unit)[0]
  found = compare(split(text), [split(a) for a in answers], classes)
  if found is not None:
    i, j = found["pair"]
    found["pair"] = (answers[i], answers[j])
  return found


# --- Sudoku -----------------------------------------------------------------------------


def sudoku_kind(puzzle: str, grid: str | None) -> str:
  """`no_answer`, `solved`, `mixed` or `other` (see the module docstring)."""
  if grid is None:
    return "no_answer"
  found = mix_kind(grid, solutions(puzzle))
  return {"valid": "solved", "mix": "mixed"}.get(found["kind"] if found else "", "other")


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


def _canonical(node: expression.Node) -> str:
  """The tree with the operands of + and * in a fixed order: one text per solution up to
  commutation."""
  if node[0] == "num":
    return str(node[1])
  left, right = _canonical(node[1]), _canonical(node[2])
  if node[0] in "+*" and right < left:
    left, right = right, left
  return f"({left}{node[0]}{right})"


@functools.cache
def renderings(numbers: tuple[int, ...], target: int, width: int = 4,
               full: bool = True) -> dict[str, str]:
  """{compact text (`compact_text`): its solution's class} of every valid answer, sorted."""
  out: dict[str, str] = {}
  for tree in countdown_solutions(numbers, target):
    out.setdefault(compact_text(tree, width, full), _canonical(tree))
  return dict(sorted(out.items()))


def think_span(text: str) -> str | None:
  """The text from the first `<think>` to the last `</think>` (None without both)."""
  m = _THINK_SPAN.search(text)
  return None if m is None else m.group(1)


def countdown_kind(numbers: Sequence[int], target: int, text: str, width: int = 4,
                   full: bool = True, unit: str = "chars") -> dict[str, Any]:
  """{"kind": solved | empty | one | mixed | other, "crossover": bool, "solutions": count}
  for a compact-format response (think numbers `width` digits wide, answers `full`y
  parenthesized, as `compact_text`; `crossover` in `unit` positions); see the module
  docstring."""
  trees = countdown_solutions(tuple(numbers), target)
  answer = extract_answer_text(text)
  if answer is not None and expression.check_countdown(answer, list(numbers), target) == "ok":
    return {"kind": "solved", "crossover": False, "solutions": len(trees)}
  parts = set(response_parts(text)[0])
  found = compare_parts(parts, [set(tree_steps(t)) for t in trees])
  kind = "empty" if not parts else "other"
  if found is not None:
    kind = {"valid": "one", "mix": "mixed"}.get(found["kind"], "other")
  crossover = mix_kind(text, list(renderings(tuple(numbers), target, width, full)), unit)
  return {"kind": kind, "crossover": crossover is not None and crossover["kind"] == "mix",
          "solutions": len(trees)}


def countdown_position_kind(numbers: Sequence[int], target: int, text: str, width: int = 4,
                            unit: str = "chars") -> dict[str, Any]:
  """The positional kind of a response against the puzzle's renderings (think numbers
  `width` digits wide), in `unit` positions: {"kind": valid | mix | mix3 | stray | length |
  malformed, "think_mix", "loose", and where some rendering has its length "d1", "d2",
  "pair" (two renderings), "distinct"} (module docstring)."""
  rendered = renderings(tuple(numbers), target, width)
  texts = list(rendered)
  found = mix_kind(text, texts, unit, list(rendered.values()))
  think = think_span(text)
  thinks = sorted({think_span(r) for r in texts})
  think_found = None if think is None else mix_kind(think, thinks, unit)
  out = {"think_mix": think_found is not None and think_found["kind"] == "mix"}
  if found is None:
    ok = get_task("countdown").format_ok(text, style="compact")
    return {**out, "kind": "length" if ok else "malformed", "loose": False}
  return {**out, **found, "loose": found["d2"] < found["d1"]}


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
