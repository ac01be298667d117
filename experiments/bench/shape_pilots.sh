#!/usr/bin/env bash
# Model-shape pilots at equal wall time (README, "How the shipped models were made"): each
# shape trains from the same config for the same number of seconds with a schedule too
# long to decay (so every pilot sees the same learning rates), then its last checkpoint
# is evaluated greedily at steps = L on the validation split (the fixed schedule).
#   experiments/bench/shape_pilots.sh CONFIG SECONDS [LIMIT]
# e.g. experiments/bench/shape_pilots.sh default_arith 480 256
set -euo pipefail
cd "$(dirname "$0")/../.."
config=$1 seconds=$2 limit=${3:-256}
out=runs/pilots_$config
mkdir -p "$out"
shapes=(
  "d256x6 model.d_model=256 model.n_layers=6 model.n_heads=8 model.n_kv_heads=8 model.mlp_hidden=768"
  "d384x4 model.d_model=384 model.n_layers=4 model.n_heads=8 model.n_kv_heads=8 model.mlp_hidden=1152"
  "d192x10 model.d_model=192 model.n_layers=10 model.n_heads=6 model.n_kv_heads=6 model.mlp_hidden=576"
)
for shape in "${shapes[@]}"; do
  read -r name sets <<<"$shape"
  args=()
  for s in $sets train.steps=100000 train.checkpoint_every=25 train.log_every=25 train.progress=false; do
    args+=(--set "$s")
  done
  rm -rf "$out/$name"
  timeout "$seconds" mro train --config "$config" --workdir "$out/$name" "${args[@]}" \
    > "$out/$name.log" 2>&1 || true
  step=$(tail -1 "$out/$name/metrics.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["step"])')
  echo "$name: $step steps in ${seconds}s"
  mro eval --model "$out/$name" --task "${config#default_}" --split validation --limit "$limit" \
    --steps L --threshold none --out "$out/pilots.jsonl" --force | tail -3
done
