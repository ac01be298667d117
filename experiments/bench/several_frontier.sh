#!/usr/bin/env bash
# Puzzles with several solutions at equal cost (docs/results.md, "Sudoku with several
# solutions"): every decoding method on the d1-kind test split
# (experiments/data/sudoku_test_8blanks_any.csv: 1536 puzzles, 297 with 2-3 solutions),
# each row with its accuracy on the unique and the several-solution puzzles apart and its
# forward passes per puzzle, so the curves of `mro plot --x nfe` compare methods at equal
# NFE. TUNED names the few-step model of experiments/sweeps/reject_few_steps_sudoku_several.yaml
# (default: the shipped default-mro).
# Usage (repository root): experiments/bench/several_frontier.sh
#   OUT=runs/several (default) · TUNED=default-mro · MRO=.venv/bin/mro · PYTHON=.venv/bin/python
#   DISTILL=<a model of the sweep> adds its rows (plain and threshold within the steps)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-runs/several}
mro=${MRO:-.venv/bin/mro}
python=${PYTHON:-.venv/bin/python}
tuned=${TUNED:-default-mro}
mkdir -p "$out"
res="$out/sudoku_several.jsonl"
data=(--task sudoku --data experiments/data/sudoku_test_8blanks_any.csv --batch-size 128
      --out "$res")
# the fixed schedule (--threshold none: the compact protocol's default commits by
# confidence within the steps)
"$mro" eval --model default "${data[@]}" --steps L,L/2,L/4,L/8 --threshold none
"$mro" eval --model "$tuned" "${data[@]}" --steps L,L/2,L/4,L/8 --threshold none
# adaptive decoding: confidence-threshold commits (the 2-pass point) and the cascade
for t in 0.999 0.99 0.9; do
  "$mro" eval --model default "${data[@]}" --steps L --threshold $t
done
"$mro" eval --model "$tuned" "${data[@]}" --steps L --threshold 0.999
# the same threshold kept to a fixed step budget (docs/sampling.md, --fixed-steps)
"$mro" eval --model default "${data[@]}" --steps L/2,L/4,L/8 --threshold 0.999 --fixed-steps
"$mro" eval --model "$tuned" "${data[@]}" --steps L/2,L/4,L/8 --threshold 0.999 --fixed-steps
"$mro" eval --model default "${data[@]}" --search cascade
# the MRO search's defaults (k = 4, tv+ppl) at the fixed schedule, on the base and the
# tuned model
"$mro" eval --model default "${data[@]}" --steps L/2,L/4,L/8 --search mro --threshold none
"$mro" eval --model "$tuned" "${data[@]}" --steps L/2,L/4,L/8 --search mro --threshold none
"$mro" eval --model "$tuned" "${data[@]}" --steps L/2,L/4 --search mro --threshold 0.999 \
  --fixed-steps
if [ -n "${DISTILL:-}" ]; then
  "$mro" eval --model "$DISTILL" "${data[@]}" --steps L,L/2,L/4,L/8 --threshold none
  "$mro" eval --model "$DISTILL" "${data[@]}" --steps L/2,L/4,L/8 --threshold 0.999 --fixed-steps
fi
"$mro" plot "$res" --x nfe --out "$out/sudoku_several.nfe.png"
"$python" -m experiments.bench.tables "$res"
