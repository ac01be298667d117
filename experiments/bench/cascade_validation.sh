#!/usr/bin/env bash
# How the verified cascade's defaults were chosen (docs/results.md, "Findings at few steps"): its stages,
# verification rows and accept level against plain and threshold decoding on the Sudoku
# VALIDATION split (the test split is then reported with the chosen setting, not re-tuned),
# and the same check on the generated validation splits of arithmetic and Countdown.
# Usage (repository root): experiments/bench/cascade_validation.sh   OUT=runs/cascade_val
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-runs/cascade_val}
mro=${MRO:-.venv/bin/mro}
mkdir -p "$out"
v=(--model default --task sudoku --data experiments/data/sudoku_validation_12blanks.csv
   --batch-size 64 --out "$out/sudoku_validation.jsonl")
# plain rows at the fixed schedule (--threshold none: the compact protocol's default
# commits by confidence within the steps)
"$mro" eval "${v[@]}" --steps L,L/2,L/4 --threshold none
for t in 0.99 0.999; do "$mro" eval "${v[@]}" --threshold $t; done
two="threshold=0.99;steps=L,threshold=none"
for a in -0.001 -0.0003 -0.0001 -0.00003; do
  "$mro" eval "${v[@]}" --search cascade --stages "$two" --accept $a
done
"$mro" eval "${v[@]}" --search cascade --stages "$two" --accept -0.0001 --verify-chunks 6
for stages in "threshold=0.99;steps=L,threshold=none;steps=L/2,threshold=none,temperature=1" \
              "threshold=0.99;steps=L/2,threshold=none;steps=L,threshold=none" \
              "threshold=0.95;steps=L,threshold=none"; do
  "$mro" eval "${v[@]}" --search cascade --stages "$stages" --accept -0.0001
done
for a in -0.0003 -0.0001; do
  "$mro" eval "${v[@]}" --search cascade --stages "threshold=0.999;steps=L,threshold=none" --accept $a
  "$mro" eval "${v[@]}" --search cascade --stages "threshold=0.99;threshold=0.999;steps=L,threshold=none" --accept $a
done
# two more stages for the prompts the default's last stage leaves unverified
d="threshold=0.99;threshold=0.999;steps=L,threshold=none"
"$mro" eval "${v[@]}" --search cascade \
  --stages "$d;steps=L,threshold=none,remasking=random;steps=L,threshold=none,temperature=1"
a=(--model default --task arith --split validation --limit 256 --batch-size 64
   --out "$out/arith_validation.jsonl")
"$mro" eval "${a[@]}" --steps L,L/2,L/4 --threshold none
"$mro" eval "${a[@]}" --threshold 0.99
"$mro" eval "${a[@]}" --search cascade --stages "$two" --accept -0.01
c=(--model default --task countdown --split validation --limit 256 --batch-size 64
   --out "$out/countdown_validation.jsonl")
"$mro" eval "${c[@]}" --steps L,L/2,L/4 --threshold none
for t in 0.99 0.999; do "$mro" eval "${c[@]}" --threshold $t; done
"$mro" eval "${c[@]}" --search cascade
"${PYTHON:-.venv/bin/python}" -m experiments.bench.tables "$out"/sudoku_validation.jsonl \
  "$out"/arith_validation.jsonl "$out"/countdown_validation.jsonl
