"""Regenerates the Sudoku CSV files in this folder (deterministic).

Harder evaluation sets than the default 8 blanks (few-step decoding breaks more often when
more cells are filled at once): test puzzles with 10, 11 and 12 blanks from the held-out
test grids, a 12-blank validation set from the validation grids, and MRO training
prompts with 10-12 blanks from the training grids only.

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


if __name__ == "__main__":
  main()
