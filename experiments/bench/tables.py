"""Markdown tables from `mro eval` results (the tables of docs/results.md are printed by this).

    python -m experiments.bench.tables runs/search/sudoku.jsonl [more.jsonl ...]

One row per evaluated setting (the latest, if a setting was run twice): the method (plain
sampler, best-of-N, MRO search with its selection, rewards and quality source), steps,
accuracy (%), the task's extra metric, mask-predictor forward passes per prompt, the causal
scorer's forward passes per prompt (R_ppl; a smaller model), and seconds.
"""

from __future__ import annotations

import sys

from mro.evaluation import report
from mro.files import read_jsonl


def main() -> None:
  for path in sys.argv[1:]:
    records = read_jsonl(path)
    print(f"{path} ({records[0]['task']}, n = {records[0]['n']})\n")
    print(report.markdown_table(records) + "\n")


if __name__ == "__main__":
  main()
