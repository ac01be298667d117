"""4x4 Sudoku: grids, held-out generator, CSV reader, extraction and the two metrics."""

import itertools
from pathlib import Path

import pytest

from rewards.tasks import SudokuTask, get_task
from rewards.tasks import sudoku as S

# d1's few-shot example: puzzle 4100/0001/1300/2000, solution 4132/3241/1324/2413.
D1_PUZZLE, D1_SOLUTION = "4100000113002000", "4132324113242413"


def _is_latin_with_boxes(grid):
  rows = [grid[4 * r:4 * r + 4] for r in range(4)]
  cols = ["".join(row[c] for row in rows) for c in range(4)]
  boxes = ["".join(rows[r][c] for r in (br, br + 1) for c in (bc, bc + 1))
           for br in (0, 2) for bc in (0, 2)]
  return all(sorted(u) == list("1234") for u in rows + cols + boxes)


def test_there_are_exactly_288_distinct_valid_grids():
  grids = S.all_grids()
  assert len(grids) == len(set(grids)) == 288
  assert all(_is_latin_with_boxes(g) and S.is_valid_grid(g) for g in grids)
  # an independent count: stack rows that are permutations of 1234, pruning columns
  perms = ["".join(p) for p in itertools.permutations("1234")]

  def columns_ok(rows):
    return all(len({r[c] for r in rows}) == len(rows) for c in range(4))

  brute = set()
  for a, b in itertools.product(perms, perms):
    if columns_ok([a, b]):
      for c, d in itertools.product(perms, perms):
        if columns_ok([a, b, c, d]) and _is_latin_with_boxes(a + b + c + d):
          brute.add(a + b + c + d)
  assert brute == set(grids)


def test_the_grid_split_is_a_fixed_partition_with_20_and_10_percent_held_out():
  splits = S.split_grids()
  assert {k: len(v) for k, v in splits.items()} == {"test": 58, "validation": 29, "train": 201}
  assert set(splits["test"]) | set(splits["validation"]) | set(splits["train"]) == set(
      S.all_grids())
  assert not set(splits["test"]) & set(splits["train"])
  assert not set(splits["validation"]) & set(splits["train"])
  assert not set(splits["test"]) & set(splits["validation"])


def test_train_and_test_puzzles_never_share_a_solution_grid():
  task = get_task("sudoku")
  splits = S.split_grids()
  for split in ("train", "validation", "test"):
    for e in task.examples(split, limit=300):
      # unique puzzles: the only solution is a grid of the puzzle's own split
      assert S.solutions(e.meta["puzzle"]) == [e.meta["solution"]]
      assert e.meta["solution"] in splits[split]


def test_generated_puzzles_have_the_asked_number_of_blanks_and_keep_their_grid():
  task = SudokuTask(blanks=10, train_blanks=(3, 5))
  for e in task.examples("test", limit=100):
    assert e.meta["blanks"] == e.meta["puzzle"].count("0") == 10
    assert S.keeps_givens(e.meta["puzzle"], e.meta["solution"])
  counts = {e.meta["blanks"] for e in task.examples("train", limit=200)}
  assert counts == {3, 4, 5}


def test_non_unique_puzzles_appear_only_when_allowed():
  assert all(e.meta["n_solutions"] == 1 for e in get_task("sudoku").examples("test"))
  loose = SudokuTask(unique=False).examples("test", limit=256)
  several = [e for e in loose if e.meta["n_solutions"] > 1]
  assert 20 < len(several) < 120  # about 22% at 8 blanks


def test_impossible_generator_settings_raise_value_errors():
  with pytest.raises(ValueError, match="at least 4 givens"):
    SudokuTask(blanks=13)
  with pytest.raises(ValueError, match="train_blanks"):
    SudokuTask(train_blanks=(6, 3))
  SudokuTask(blanks=16, unique=False)  # allowed: any valid grid solves it
  with pytest.raises(ValueError, match="distinct"):
    SudokuTask(blanks=1).generate("validation", 29 * 16 + 1)


def test_a_valid_alternative_solution_is_correct_but_loses_cell_accuracy():
  task = get_task("sudoku")
  puzzle = "1200340021000000"  # several solutions
  sols = S.solutions(puzzle)
  assert len(sols) > 1
  example = task._example("x", puzzle, sols[0], "compact")
  other = sols[1]
  scores = task.score(example, f"<answer>{other}</answer>")
  assert scores["correct"] == scores["solve"] == 1.0 and scores["exact"] == 0.0
  empty = [i for i, d in enumerate(puzzle) if d == "0"]
  assert scores["cell_accuracy"] == sum(other[i] == sols[0][i] for i in empty) / len(empty)
  assert scores["cell_accuracy"] < 1.0
  assert task.verify(example, f"<answer>{other}</answer>")


def test_cell_accuracy_counts_only_the_empty_cells():
  task = get_task("sudoku")
  example = task._example("x", D1_PUZZLE, D1_SOLUTION, "compact")
  wrong = list(D1_SOLUTION)
  wrong[2], wrong[3] = wrong[3], wrong[2]  # two of the 10 empty cells swapped
  wrong[0] = "3"  # a given overwritten: not an empty cell, invalid grid anyway
  scores = task.score(example, "<answer>" + "".join(wrong) + "</answer>")
  assert D1_PUZZLE.count("0") == 10
  assert scores["cell_accuracy"] == pytest.approx(8 / 10)
  assert scores["correct"] == 0.0 and not task.verify(example, "".join(wrong))


def test_answers_may_be_split_into_rows_but_must_be_exactly_16_digits():
  task = get_task("sudoku")
  rows = "\n".join(D1_SOLUTION[i:i + 4] for i in range(0, 16, 4))
  assert task.extract_answer(f"<answer>\n{rows}\n</answer>") == D1_SOLUTION
  assert task.extract_answer("<answer>4132 3241 1324 2413</answer>") == D1_SOLUTION
  assert task.extract_answer("<answer>4,1,3,2,3,2,4,1,1,3,2,4,2,4,1,3</answer>") == D1_SOLUTION
  assert task.extract_answer(f"\\boxed{{{D1_SOLUTION}}}") == D1_SOLUTION
  assert task.extract_answer(f"<answer>{D1_SOLUTION}1</answer>") is None  # 17 digits
  assert task.extract_answer(f"<answer>{D1_SOLUTION[:15]}</answer>") is None
  assert task.extract_answer(f"<answer>{D1_SOLUTION[:15]}x</answer>") is None
  assert task.extract_answer(f"<answer>[{D1_SOLUTION}]</answer>") is None
  assert task.extract_answer(D1_SOLUTION) is None  # no tag, no box
  example = task._example("x", D1_PUZZLE, D1_SOLUTION, "compact")
  assert task.score(example, f"<answer>{D1_SOLUTION}1</answer>")["cell_accuracy"] == 0.0


def test_grids_with_repeated_digits_or_changed_givens_do_not_verify():
  task = get_task("sudoku")
  example = task._example("x", D1_PUZZLE, D1_SOLUTION, "compact")
  assert task.verify(example, f"<answer>{D1_SOLUTION}</answer>")
  assert not task.verify(example, "<answer>1234123412341234</answer>")  # columns repeat
  other = next(g for g in S.all_grids() if g != D1_SOLUTION)
  assert not task.verify(example, f"<answer>{other}</answer>")
  assert not task.verify(example, "<answer>" + D1_SOLUTION.replace("4", "5") + "</answer>")
  latin_not_sudoku = "1234214334124321"  # rows and columns fine, top-left box repeats
  assert _is_latin_with_boxes(latin_not_sudoku) is False and not S.is_valid_grid(latin_not_sudoku)
  blank = SudokuTask(unique=False)._example("y", "0" * 16, S.all_grids()[0], "compact")
  assert not task.verify(blank, f"<answer>{latin_not_sudoku}</answer>")
  assert task.verify(blank, f"<answer>{S.all_grids()[-1]}</answer>")


def test_the_compact_prompt_and_target_are_short():
  e = get_task("sudoku").examples("test", limit=1)[0]
  assert e.prompt == f"Sudoku {e.meta['puzzle']}"
  assert e.target == f"<answer>{e.meta['solution']}</answer>"
  p = get_task("sudoku").examples("test", limit=1, style="protocol")[0]
  assert p.prompt.endswith(f"Solve the following Sudoku puzzle: {e.meta['puzzle']}\n")


def _write(tmp_path, text):
  path = tmp_path / "puzzles.csv"
  path.write_text(text)
  return str(path)


def test_the_csv_reader_reads_puzzle_solution_rows_in_order(tmp_path):
  path = _write(tmp_path, f"Puzzle,Solution\n{D1_PUZZLE},{D1_SOLUTION}\n\n"
                f"0004032102033002,2134432112433412\n")
  examples = get_task("sudoku").examples("test", path=path)
  assert [e.meta["puzzle"] for e in examples] == [D1_PUZZLE, "0004032102033002"]
  assert examples[0].answer == D1_SOLUTION and examples[0].id == "sudoku-test-00000"
  assert get_task("sudoku").examples("test", path=path, limit=1)[0].answer == D1_SOLUTION


@pytest.mark.parametrize("body, message", [
    (f"Quiz,Answer\n{D1_PUZZLE},{D1_SOLUTION}\n", "line 1: the header"),
    (f"Puzzle,Solution\n{D1_PUZZLE},{D1_SOLUTION}\n{D1_PUZZLE[1:]},{D1_SOLUTION}\n",
     "line 3: a puzzle is 16 characters"),
    (f"Puzzle,Solution\n{D1_PUZZLE[:-1]}x,{D1_SOLUTION}\n", "line 2: a puzzle"),
    (f"Puzzle,Solution\n{D1_PUZZLE}\n", "line 2: expected columns"),
    (f"Puzzle,Solution\n{D1_PUZZLE},{D1_SOLUTION}9\n", "line 2: solution .* not a valid"),
    (f"Puzzle,Solution\n{D1_PUZZLE},1234341221434321\n", "line 2: solution .* givens"),
    (f"Puzzle,Solution\n{D1_PUZZLE},1111222233334444\n", "line 2: solution .* not a valid"),
])
def test_malformed_csv_rows_raise_value_errors_naming_the_line(tmp_path, body, message):
  with pytest.raises(ValueError, match=message):
    get_task("sudoku").examples("test", path=_write(tmp_path, body))


def test_a_missing_csv_file_is_a_value_error(tmp_path):
  with pytest.raises(ValueError, match="not found"):
    get_task("sudoku").examples("test", path=str(tmp_path / "none.csv"))


def test_a_solution_count_range_keeps_only_puzzles_with_that_many_solutions():
  several = SudokuTask(unique=False, solutions=(2, 3)).examples("test", limit=64)
  assert all(2 <= e.meta["n_solutions"] <= 3 for e in several)
  assert all(e.meta["n_solutions"] == len(S.solutions(e.meta["puzzle"])) for e in several)
  assert {e.meta["n_solutions"] for e in several} == {2, 3}
  assert SudokuTask(unique=False, solutions=[1, 1]).solutions == (1, 1)  # YAML lists


@pytest.mark.parametrize("fields, message", [
    ({"solutions": (2, 4)}, "needs unique=False"),
    ({"unique": False, "solutions": (0, 2)}, "1 <= min <= max"),
    ({"unique": False, "solutions": (3, 2)}, "1 <= min <= max"),
    ({"unique": False, "solutions": (2,)}, "two integers"),
    ({"unique": False, "solutions": 2}, "two integers"),
    ({"unique": False, "solutions": (1.5, 2)}, "two integers"),
])
def test_bad_solution_ranges_raise_value_errors_naming_the_field(fields, message):
  with pytest.raises(ValueError, match=f"sudoku.solutions.*{message}"):
    SudokuTask(**fields)


def test_an_impossible_solution_range_fails_with_a_clear_error():
  with pytest.raises(ValueError, match="solutions=\\(50, 60\\)"):
    SudokuTask(blanks=4, unique=False, solutions=(50, 60)).generate("test", 1)


def test_the_group_of_an_example_is_unique_or_several_by_its_solution_count():
  task = get_task("sudoku")
  loose = SudokuTask(unique=False).examples("test", limit=128)
  groups = [task.group(e) for e in loose]
  assert groups == ["unique" if e.meta["n_solutions"] == 1 else "several" for e in loose]
  assert set(groups) == {"unique", "several"}
  assert task.group(task._example("x", D1_PUZZLE, D1_SOLUTION, "compact")) == "unique"


DATA = Path(__file__).resolve().parents[1] / "experiments" / "data"


def test_the_shipped_d1_kind_files_have_enough_puzzles_with_several_solutions():
  splits = S.split_grids()
  for name, split, least in (("sudoku_test_8blanks_any.csv", "test", 256),
                             ("sudoku_validation_8blanks_any.csv", "validation", 64)):
    rows = S.read_csv(DATA / name)
    assert all(p.count("0") == 8 and s in splits[split] for p, s in rows)
    assert len({p for p, _ in rows}) == len(rows)
    assert sum(len(S.solutions(p)) > 1 for p, _ in rows) >= least
  train = S.read_csv(DATA / "sudoku_train_8to10blanks_any.csv")
  assert all(8 <= p.count("0") <= 10 and s in splits["train"] for p, s in train)
  assert sum(len(S.solutions(p)) > 1 for p, _ in train) > len(train) // 4


def test_the_shipped_d1_kind_files_are_what_the_generator_makes():
  loose = SudokuTask(blanks=8, train_blanks=(8, 10), unique=False)
  assert S.read_csv(DATA / "sudoku_test_8blanks_any.csv") == loose.generate("test", 1536)
  assert S.read_csv(DATA / "sudoku_validation_8blanks_any.csv") == \
      loose.generate("validation", 512)
