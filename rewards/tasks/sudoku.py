"""4x4 Sudoku (2x2 boxes): the 288 grids, a held-out puzzle generator, a CSV reader.

Grids and puzzles are 16-character row-major digit strings, `0` = empty cell.

Formats
  compact   prompt `Sudoku 1002000000300401`
            target `<answer>1342241331244231</answer>`   (no reasoning part)
  protocol  d1's Sudoku system prompt + "\\n\\nSolve the following Sudoku puzzle:
            {puzzle}\\n"; target `<reasoning>...</reasoning>` then the 16 digits in
            `<answer>` (not boxed, as d1 asks).

Held-out split: the 288 solution grids are ordered by SHA-256 of "sudoku4:<grid>"; the
first 58 (20%) are test-only, the next 29 (10%) validation-only, the other 201 train.
A generated puzzle is a grid of its split with cells blanked, so train and test
puzzles never share a solution grid. Puzzles within one call are distinct.

Solution counts: `unique=True` (the default) keeps only puzzles with one solution.
`unique=False` keeps them as they fall (at 8 blanks about 18% have 2-4 solutions, as in
d1's benchmark), or, with `solutions=(lo, hi)`, only those with lo..hi solutions. A
puzzle with several solutions is still made from a grid of its split, but its other
solutions may be grids of another split. Every example's meta records `n_solutions`,
and `group(example)` names it "unique" or "several" (`mro eval` reports accuracy per
group).

Answer: the extracted answer (`\\boxed{}` else `<answer>`) with whitespace and commas
removed must be exactly 16 digits ("1234 3412 ..." and one row per line are fine);
anything else, e.g. 17 digits or a stray letter, is no answer. (d1 keeps the digits and
pads/truncates to 16; here a wrong-length grid is simply wrong.)

Metrics: `correct` = `solve` (the answer is a valid grid that keeps every given; any
valid solution counts, as ~25% of random puzzles have several), `cell_accuracy` (d1's
metric: share of empty cells equal to the stored solution), `exact` (equals the stored
solution), `format`, `answered`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import functools
import random
import re
from pathlib import Path
from typing import ClassVar

from mro.messages import quoted

from . import formats
from .data import read_text
from .base import (Example, check_limit, check_split, check_style, extract_answer_text,
                   register, stable_unit)

SIZE = 16
TEST_GRIDS, VALIDATION_GRIDS = 58, 29
DEFAULT_LIMITS = {"train": 10000, "validation": 256, "test": 256}
MAX_CONSECUTIVE_REJECTS = 20000

SYSTEM_PROMPT = (
    "\nPlease solve the following 4x4 Sudoku puzzle. The puzzle is provided as a "
    "16-character string reading left-to-right, top-to-bottom, where '0' represents "
    "empty cells.\n\n"
    "Rules:\n"
    "- Fill empty cells with digits 1-4\n"
    "- Each row must contain digits 1-4 exactly once\n"
    "- Each column must contain digits 1-4 exactly once\n"
    "- Each 2x2 box must contain digits 1-4 exactly once\n\n"
    "Important: Your solution must be a COMPLETE 16-character string with only the "
    "digits 1-4, representing your final solved grid.\n\n"
    "Respond in this exact format:\n"
    "<reasoning>\n"
    "Your step-by-step solving process\n"
    "</reasoning>\n"
    "<answer>\n"
    "[16-character solution string with no spaces or separators]\n"
    "</answer>\n")

_UNITS = tuple(
    [tuple(4 * r + c for c in range(4)) for r in range(4)]
    + [tuple(4 * r + c for r in range(4)) for c in range(4)]
    + [tuple(4 * (br + r) + bc + c for r in range(2) for c in range(2))
       for br in (0, 2) for bc in (0, 2)])


def is_valid_grid(grid: str) -> bool:
  """16 digits 1-4 with every row, column and 2x2 box a permutation of 1234."""
  if len(grid) != SIZE or not set(grid) <= set("1234"):
    return False
  return all(len({grid[i] for i in unit}) == 4 for unit in _UNITS)


def keeps_givens(puzzle: str, grid: str) -> bool:
  return len(grid) == SIZE and all(p in ("0", g) for p, g in zip(puzzle, grid))


@functools.cache
def all_grids() -> tuple[str, ...]:
  """All 288 valid grids, sorted."""
  grids = []

  def fill(cells: list[str], i: int) -> None:
    if i == SIZE:
      grids.append("".join(cells))
      return
    for d in "1234":
      if all(cells[j] != d for unit in _UNITS if i in unit for j in unit if j < i):
        cells[i] = d
        fill(cells, i + 1)
    cells[i] = "0"

  fill(["0"] * SIZE, 0)
  return tuple(sorted(grids))


@functools.cache
def split_grids() -> dict[str, tuple[str, ...]]:
  """The held-out partition of the 288 grids (see the module docstring)."""
  ordered = sorted(all_grids(), key=lambda g: stable_unit(f"sudoku4:{g}"))
  return {
      "test": tuple(sorted(ordered[:TEST_GRIDS])),
      "validation": tuple(sorted(ordered[TEST_GRIDS:TEST_GRIDS + VALIDATION_GRIDS])),
      "train": tuple(sorted(ordered[TEST_GRIDS + VALIDATION_GRIDS:])),
  }


@functools.cache
def _cell_masks() -> tuple[tuple[int, ...], ...]:
  """masks[cell][digit]: bit k set iff all_grids()[k] has `digit` at `cell`."""
  masks = [[0] * 5 for _ in range(SIZE)]
  for k, grid in enumerate(all_grids()):
    for cell, d in enumerate(grid):
      masks[cell][int(d)] |= 1 << k
  return tuple(tuple(m) for m in masks)


def solutions(puzzle: str) -> list[str]:
  """Every valid grid that keeps the givens of `puzzle`."""
  check_puzzle(puzzle)
  masks = _cell_masks()
  found = (1 << len(all_grids())) - 1
  for cell, d in enumerate(puzzle):
    if d != "0":
      found &= masks[cell][int(d)]
  return [g for k, g in enumerate(all_grids()) if found >> k & 1]


def check_puzzle(puzzle: str) -> None:
  if len(puzzle) != SIZE or not set(puzzle) <= set("01234"):
    raise ValueError(f"a puzzle is {SIZE} characters from 0-4 (0 = empty), got "
                     f"{quoted(puzzle)} ({len(puzzle)} characters)")


def check_pair(puzzle: str, solution: str) -> None:
  """ValueError unless `solution` is a valid grid that keeps the givens of `puzzle`."""
  check_puzzle(puzzle)
  if not is_valid_grid(solution):
    raise ValueError(f"solution {quoted(solution)} is not a valid 4x4 Sudoku grid (16 digits "
                     "1-4, rows, columns and boxes each a permutation of 1234)")
  if not keeps_givens(puzzle, solution):
    raise ValueError(f"solution {quoted(solution)} does not match the givens of {quoted(puzzle)}")


def read_csv(path: str | Path) -> list[tuple[str, str]]:
  """(puzzle, solution) rows of a CSV file with header `Puzzle,Solution` (more columns
  are ignored, blank lines skipped). Malformed rows raise ValueError naming the line."""
  path = Path(path)
  if not path.is_file():
    raise ValueError(f"sudoku CSV file not found: {path}")
  rows = []
  lines = _csv_rows(read_text(path, encoding="utf-8-sig"), path)
  header = [h.strip() for h in next(lines, (1, []))[1]]
  if "Puzzle" not in header or "Solution" not in header:
    raise ValueError(f"{path} line 1: the header must name columns Puzzle,Solution, "
                     f"got {quoted(header)}")
  ip, js = header.index("Puzzle"), header.index("Solution")
  for line, row in lines:
    if not any(cell.strip() for cell in row):
      continue
    where = f"{path} line {line}"
    if len(row) <= max(ip, js):
      raise ValueError(f"{where}: expected columns Puzzle,Solution, got {quoted(row)}")
    puzzle, solution = row[ip].strip(), row[js].strip()
    try:
      check_pair(puzzle, solution)
    except ValueError as e:
      raise ValueError(f"{where}: {e}") from e
    rows.append((puzzle, solution))
  return rows


def _csv_rows(text: str, path: Path):
  """(line number, cells) of each CSV row; a row the csv module refuses (a field over its
  128 KB limit, a stray quote) is a ValueError naming the line."""
  reader = csv.reader(io.StringIO(text, newline=""))
  while True:
    try:
      row = next(reader)
    except StopIteration:
      return
    except csv.Error as e:
      raise ValueError(f"{path} line {reader.line_num}: not a CSV row ({e})") from None
    yield reader.line_num, row


def _solution_range(value, unique: bool) -> None:
  if value is None:
    return
  if unique:
    raise ValueError(f"sudoku.solutions={quoted(value)} needs unique=False (unique keeps exactly "
                     "one solution)")
  integers = isinstance(value, (tuple, list)) and len(value) == 2 and all(
      isinstance(v, int) and not isinstance(v, bool) for v in value)
  if not integers or not 1 <= value[0] <= value[1]:
    raise ValueError(f"sudoku.solutions={quoted(value)}: need two integers 1 <= min <= max "
                     "(the range of solution counts to keep)")


def _blank_range(value: tuple[int, int], unique: bool, field: str) -> None:
  lo, hi = value
  top = 12 if unique else SIZE  # a unique 4x4 puzzle has at least 4 givens
  if not 1 <= lo <= hi <= top:
    raise ValueError(f"sudoku.{field}={quoted(value)}: need 1 <= blanks <= {top}"
                     f"{' (unique puzzles keep at least 4 givens)' if unique else ''}")


@dataclasses.dataclass(frozen=True)
class SudokuTask:
  """`blanks` empty cells in validation/test puzzles; train puzzles draw the number of
  blanks uniformly from `train_blanks`. `unique=True` keeps only puzzles with exactly
  one solution; with `unique=False`, `solutions=(lo, hi)` keeps only puzzles with lo..hi
  solutions (None: any count, as they fall)."""

  name: str = "sudoku"
  blanks: int = 8
  train_blanks: tuple[int, int] = (4, 10)
  unique: bool = True
  solutions: tuple[int, int] | None = None
  has_verifier: ClassVar[bool] = True

  def __post_init__(self):
    _blank_range((self.blanks, self.blanks), self.unique, "blanks")
    _blank_range(tuple(self.train_blanks), self.unique, "train_blanks")
    _solution_range(self.solutions, self.unique)
    if self.solutions is not None:
      object.__setattr__(self, "solutions", tuple(self.solutions))

  def keeps(self, puzzle: str) -> bool:
    """Whether the generator keeps `puzzle` (its solution count is in range)."""
    if not self.unique and self.solutions is None:
      return True
    lo, hi = (1, 1) if self.unique else self.solutions
    return lo <= len(solutions(puzzle)) <= hi

  def generate(self, split: str, count: int, seed: int = 0) -> list[tuple[str, str]]:
    """`count` distinct (puzzle, solution) pairs from the grids of `split`."""
    check_split(split)
    grids = split_grids()[split]
    lo, hi = self.train_blanks if split == "train" else (self.blanks, self.blanks)
    rng = random.Random(f"sudoku:{split}:{seed}")
    seen: set[str] = set()
    pairs = []
    rejects = 0
    while len(pairs) < count:
      grid = rng.choice(grids)
      empty = set(rng.sample(range(SIZE), rng.randint(lo, hi)))
      puzzle = "".join("0" if i in empty else d for i, d in enumerate(grid))
      if puzzle in seen or not self.keeps(puzzle):
        rejects += 1
        if rejects > MAX_CONSECUTIVE_REJECTS:
          raise ValueError(f"could only make {len(pairs)} distinct {split} puzzles with "
                           f"blanks in [{lo}, {hi}], unique={self.unique}, solutions="
                           f"{self.solutions}; ask for fewer")
        continue
      rejects = 0
      seen.add(puzzle)
      pairs.append((puzzle, grid))
    return pairs

  def examples(self, split: str, *, path: str | None = None, limit: int | None = None,
               seed: int = 0, style: str = "compact") -> list[Example]:
    """Generated puzzles of `split` (seed -> same list; a smaller limit gives a prefix),
    or, with `path`, the rows of that CSV file in order (split only names the ids)."""
    check_split(split)
    check_style(style)
    check_limit(limit)
    if path is not None:
      pairs = read_csv(path)[:limit]
    else:
      pairs = self.generate(split, DEFAULT_LIMITS[split] if limit is None else limit, seed)
    return [self._example(f"{self.name}-{split}-{i:05d}", p, s, style)
            for i, (p, s) in enumerate(pairs)]

  def _example(self, id_: str, puzzle: str, solution: str, style: str) -> Example:
    meta = {"style": style, "puzzle": puzzle, "solution": solution,
            "blanks": puzzle.count("0"), "n_solutions": len(solutions(puzzle))}
    if style == "compact":
      return Example(id_, f"Sudoku {puzzle}", formats.compact_response(solution), solution,
                     meta)
    rows = "\n".join(solution[i:i + 4] for i in range(0, SIZE, 4))
    reasoning = ("Each empty cell takes the digit missing from its row, column and box. "
                 f"The solved rows are:\n{rows}")
    return Example(id_,
                   formats.protocol_prompt(
                       SYSTEM_PROMPT, f"Solve the following Sudoku puzzle: {puzzle}\n"),
                   formats.protocol_response(reasoning, solution, boxed=False), solution,
                   meta)

  def group(self, example: Example) -> str | None:
    """"unique" or "several" by the puzzle's solution count (None if unknown)."""
    count = example.meta.get("n_solutions")
    return None if count is None else "unique" if count == 1 else "several"

  def extract_answer(self, text: str) -> str | None:
    content = extract_answer_text(text)
    if content is None:
      return None
    digits = re.sub(r"[\s,]", "", content)
    return digits if re.fullmatch(r"[0-9]{16}", digits) else None

  def score(self, example: Example, text: str) -> dict[str, float]:
    puzzle, solution = example.meta["puzzle"], example.meta["solution"]
    grid = self.extract_answer(text)
    solved = grid is not None and is_valid_grid(grid) and keeps_givens(puzzle, grid)
    empty = [i for i, d in enumerate(puzzle) if d == "0"]
    if grid is None:
      cells = 0.0
    elif empty:
      cells = sum(grid[i] == solution[i] for i in empty) / len(empty)
    else:
      cells = float(solved)
    return {"correct": float(solved), "solve": float(solved), "cell_accuracy": cells,
            "exact": float(grid == solution), "answered": float(grid is not None),
            "format": float(self.format_ok(text, style=example.meta.get("style")))}

  def verify(self, example: Example, text: str) -> bool:
    grid = self.extract_answer(text)
    return grid is not None and is_valid_grid(grid) and keeps_givens(
        example.meta["puzzle"], grid)

  def format_ok(self, text: str, *, style: str | None = None) -> bool:
    return formats.style_format_ok(text, style, compact_reasoning=False,
                                   protocol_boxed=False)


register(SudokuTask())
