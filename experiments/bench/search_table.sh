#!/usr/bin/env bash
# The MRO test-time search table (docs/results.md, "MRO test-time search"): the plain sampler,
# best-of-N at equal NFE, MRO search with argmax and with importance resampling, the reward
# ablations, and the verifier variant, on the shipped default models.
# Usage (repository root): experiments/bench/search_table.sh [sudoku|countdown ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-runs/search}
mkdir -p "$out"
for task in ${*:-sudoku countdown}; do
  case $task in
    # few = the step counts of the search rows; the claim and tau rows are Sudoku's
    sudoku) data=(--data experiments/data/sudoku_test_12blanks.csv); L=24; few="6 3";;
    countdown) data=(--limit 128); L=48; few=12;;  # 128 test puzzles, L/4: the budget here
  esac
  res="$out/$task.jsonl"
  # every row at the fixed schedule (the compact protocol's default commits by confidence)
  common=(--model default --task "$task" "${data[@]}" --batch-size 64 --out "$res"
          --threshold none)
  search=(--k 4 --scorer default --search-temperature 1.0)
  mro eval "${common[@]}" --steps L,L/2,L/4,L/8
  for steps in $few; do
    w=$(( steps % 2 == 0 ? steps / 2 : 1 ))
    for rewards in tv,ppl,q tv,ppl; do
      mro eval "${common[@]}" --steps $steps --search best-of-n --group-steps $w \
        "${search[@]}" --rewards $rewards
      for select in argmax resample; do
        mro eval "${common[@]}" --steps $steps --search mro --group-steps $w --select $select \
          "${search[@]}" --rewards $rewards
      done
    done
  done
  steps=$((L / 4)); w=$((steps / 2))
  for rewards in tv ppl q tv,q ppl,q tv,ppl; do
    mro eval "${common[@]}" --steps $steps --search mro --group-steps $w "${search[@]}" \
      --rewards $rewards
  done
  mro eval "${common[@]}" --steps $steps --search mro --group-steps $w "${search[@]}" \
    --rewards tv,ppl,q --quality-source verifier
  [ "$task" = sudoku ] || continue
  # the paper's claim: search at half the steps vs the plain sampler at full steps
  mro eval "${common[@]}" --steps $((L / 2)) --search mro --group-steps $((L / 4)) \
    "${search[@]}" --rewards tv,ppl,q
  mro eval "${common[@]}" --steps $((L / 2)) --search mro --group-steps $((L / 4)) \
    "${search[@]}" --rewards tv,ppl
  # the paper's candidate temperature, for reference
  mro eval "${common[@]}" --steps $steps --search mro --group-steps $w --k 4 --scorer default \
    --search-temperature 0.25 --rewards tv,ppl,q
done
