"""Writes the local data of the lm-eval test tasks (run from the repository root):

  sudoku.jsonl        the first 16 Sudoku test puzzles (compact prompts, unique solutions)
  countdown_mc.jsonl  the first 16 Countdown test problems as 4-way multiple choice: the
                      problem's own compact target among the targets of 3 other problems

`python tests/lm_eval_tasks/make_data.py` rewrites both; test_lm_eval.py checks the files
still hold exactly what this script writes.
"""

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
N = 16


def sudoku_rows():
  from rewards.tasks import get_task
  return [{"id": ex.id, "prompt": ex.prompt, "answer": ex.answer}
          for ex in get_task("sudoku").examples("test", limit=N)]


def countdown_rows():
  from rewards.tasks import get_task
  exs = get_task("countdown").examples("test", limit=4 * N)
  rng = random.Random(0)
  rows = []
  for i, ex in enumerate(exs[:N]):
    others = [e.target for e in rng.sample(exs[:i] + exs[i + 1:], 3)]
    label = rng.randrange(4)
    choices = others[:label] + [ex.target] + others[label:]
    rows.append({"id": ex.id, "prompt": ex.prompt, "choices": choices, "label": label})
  return rows


def as_jsonl(rows) -> str:
  return "".join(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
  sys.path.insert(0, str(ROOT))
  (HERE / "sudoku.jsonl").write_text(as_jsonl(sudoku_rows()))
  (HERE / "countdown_mc.jsonl").write_text(as_jsonl(countdown_rows()))
