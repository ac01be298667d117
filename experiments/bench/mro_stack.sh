#!/usr/bin/env bash
# The whole MRO stack on Sudoku (docs/results.md, "Findings at few steps"): the few-step tuned model
# (`--model default-mro`, MRO reject sampling at L/4) decoded plainly, by threshold, by
# the MRO group search and by the verified cascade, beside the base model's plain rows;
# the 256 test puzzles with 12 blanks, greedy. Writes one JSONL (mro plot --x nfe draws it).
# Usage (repository root): experiments/bench/mro_stack.sh   OUT=runs/mro_stack
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-runs/mro_stack}
mro=${MRO:-.venv/bin/mro}
mkdir -p "$out"
for model in default default-mro; do
  e=(--model "$model" --task sudoku --data experiments/data/sudoku_test_12blanks.csv
     --batch-size 128 --out "$out/sudoku_stack.jsonl")
  # plain and search rows at the fixed schedule (--threshold none: the compact protocol's
  # default commits by confidence within the steps)
  "$mro" eval "${e[@]}" --steps L,L/2,L/4,L/8 --threshold none
  for t in 0.99 0.999; do "$mro" eval "${e[@]}" --threshold $t; done
  "$mro" eval "${e[@]}" --search mro --steps L/2,L/4 --threshold none
  "$mro" eval "${e[@]}" --search cascade
done
