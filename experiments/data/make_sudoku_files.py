"""Regenerates the Sudoku CSV files in this folder (deterministic).

Harder evaluation sets than the default 8 blanks (few-step decoding breaks more often when
more cells are filled at once): test puzzles with 10, 11 and 12 blanks from the held-out
test grids, a 12-blank validation set from the validation grids, and MRO training
prompts with 10-12 blanks from the training grids only.

The d1 kind (8 blanks, solution counts as they fall, `unique=False`): 1536 test puzzles
(297 with several solutions, so that the several-solution group alone has n >= 256), 512
validation puzzles (from the validation grids) and 4096 training prompts with 8-10 blanks
(the training grids; about a third with several solutions).

    python experiments/data/make_sudoku_files.py
"""

from pathlib import Path

from rewards.tasks.sudoku import SudokuTask

HERE = Path(__file__).resolve().parent


def write(name: str, pairs) -> None:
  (HERE / name).write_text("Puzzle,Solution\n" + "".join(f"{p},{s}\n" for p, s in pairs))


def main() -> None:
  for blanks in (10, 11, 12):
    write(f"sudoku_test_{blanks}blanks.csv", SudokuTask(blanks=blanks).generate("test", 256))
  write("sudoku_validation_12blanks.csv", SudokuTask(blanks=12).generate("validation", 256))
  write("sudoku_train_10to12blanks.csv",
        SudokuTask(train_blanks=(10, 12)).generate("train", 4096, seed=1))
  # solutions as they fall (the failure MRO exists for: puzzles with several answers)
  loose = SudokuTask(blanks=8, train_blanks=(8, 10), unique=False)
  write("sudoku_test_8blanks_any.csv", loose.generate("test", 1536))
  write("sudoku_validation_8blanks_any.csv", loose.generate("validation", 512))
  write("sudoku_train_8to10blanks_any.csv", loose.generate("train", 4096, seed=1))


if __name__ == "__main__":
  main()
