#!/usr/bin/env bash
# Trains the shipped default models from their committed configs and copies them into
# experiments/models/: the mask predictors (default/<task>) and their causal perplexity
# scorers (default-scorer/<task>), which share the predictor's tokenizer. The shipped copies
# are stored in bfloat16 (half the size; accuracy unchanged: docs/training.md).
# Usage (from the repository root): experiments/train_defaults.sh [task ...]
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${*:-sudoku countdown arith}
# The Countdown and arithmetic models are their 5000-step runs extended to 8000 steps (the
# cosine schedule restarted at the extension; experiments/results/training/default_*.md).
declare -A extend=([countdown]=8000 [arith]=8000)
for t in $tasks; do
  mro train --config "default_$t" --workdir "runs/default_$t" --set train.progress=false
  if [ -n "${extend[$t]:-}" ]; then
    mro train --config "default_$t" --workdir "runs/default_$t" \
      --set "train.steps=${extend[$t]}" --set train.progress=false
  fi
  rm -rf "experiments/models/default/$t" && mkdir -p experiments/models/default
  mro convert "runs/default_$t/model" "experiments/models/default/$t" --dtype bfloat16
  mro train --config "scorer_$t" --workdir "runs/scorer_$t" --set train.progress=false
  rm -rf "experiments/models/default-scorer/$t" && mkdir -p experiments/models/default-scorer
  mro convert "runs/scorer_$t/model" "experiments/models/default-scorer/$t" --dtype bfloat16
done
