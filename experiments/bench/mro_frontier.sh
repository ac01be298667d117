#!/usr/bin/env bash
# Few steps at full-step accuracy? (docs/results.md, "Findings at few steps"): accuracy against cost on
# a task's test split for the plain sampler (steps L..L/8), confidence-threshold decoding,
# best-of-N at equal NFE, the MRO search (defaults, more candidates, fewer groups, token
# correction inside the sampler), the verified cascade (threshold decoding first, R_tv over
# each finished answer decides which prompts are decoded again at L steps; its accept level
# was chosen on the validation split, the other levels draw the curve) and, reported apart,
# the search with the task's own label-free check as R_q. One results file per task; the table is `mro eval`'s rows and
# the curves come from `mro plot --x nfe|seconds`.
# Usage (repository root): experiments/bench/mro_frontier.sh [sudoku|arith ...]
#   OUT=runs/frontier (default) · LIMIT=256 (default; arith runs the first LIMIT)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-runs/frontier}
mro=${MRO:-.venv/bin/mro}
mkdir -p "$out"
for task in ${*:-sudoku arith}; do
  case $task in
    sudoku) data=(--data experiments/data/sudoku_test_12blanks.csv); few="L/2,L/4";;
    arith) data=(--limit "${LIMIT:-256}"); few="L/2,L/4";;
    *) echo "unknown task $task (sudoku, arith)" >&2; exit 2;;
  esac
  res="$out/$task.jsonl"
  common=(--model default --task "$task" "${data[@]}" --batch-size 64 --out "$res")
  # rows that name no rule run the fixed schedule (plain: --threshold none; the compact
  # protocol's default commits by confidence within the steps)
  plain=(--threshold none)
  "$mro" eval "${common[@]}" --steps L,L/2,L/4,L/8 "${plain[@]}"
  for t in 0.9999 0.999 0.99 0.95 0.9 0.8 0.7; do
    "$mro" eval "${common[@]}" --steps L --threshold $t
  done
  "$mro" eval "${common[@]}" --steps $few --search best-of-n "${plain[@]}"    # k = 4, tv+ppl
  "$mro" eval "${common[@]}" --steps $few,L/8 --search mro "${plain[@]}"      # the defaults
  "$mro" eval "${common[@]}" --steps $few --search mro --k 8 "${plain[@]}"
  "$mro" eval "${common[@]}" --steps $few --search mro --n-verify all "${plain[@]}"
  # R_tv over every committed position ranks almost perfectly at the end and barely
  # better than chance before (mro diagnose): a final pick among independent candidates
  "$mro" eval "${common[@]}" --steps $few --search best-of-n --rewards tv --n-verify all \
    "${plain[@]}"
  "$mro" eval "${common[@]}" --steps $few --search best-of-n --rewards tv --n-verify all --k 8 \
    "${plain[@]}"
  # token correction inside the sampler: committed tokens the model itself doubts (leave-
  # one-out probability below 0.5) are re-masked once and decoded again
  "$mro" eval "${common[@]}" --steps $few --correct-below 0.5
  "$mro" eval "${common[@]}" --steps $few --correct-below 0.5 --correct-rows 1
  # the verified cascade: the default, then other accept levels for the curve
  "$mro" eval "${common[@]}" --search cascade
  for a in -0.001 -0.0003 -0.00003; do
    "$mro" eval "${common[@]}" --search cascade --accept $a
  done
  "$mro" eval "${common[@]}" --search cascade --stages "threshold=0.99;threshold=0.999;steps=L,threshold=none;steps=L,threshold=none,remasking=random;steps=L,threshold=none,temperature=1"
  # the task's label-free check as R_q (Sudoku: the grid obeys the rules), reported apart;
  # arithmetic's check recomputes the answer, which is the label: not run
  [ "$task" = sudoku ] && "$mro" eval "${common[@]}" --steps $few --search mro --rewards tv,ppl,q \
    --quality-source verifier "${plain[@]}"
  "$mro" plot "$res" --x nfe --out "$out/$task.nfe.png"
  "$mro" plot "$res" --x seconds --out "$out/$task.seconds.png"
done
