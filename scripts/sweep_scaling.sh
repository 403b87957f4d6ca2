#!/usr/bin/env bash
# Scaling of the local sweep backend: the same 4 short Fashion-MNIST runs with --jobs 1 (all
# cores to each run) and with --jobs 2 (half the cores each), wall time of each sweep.
# Usage: scripts/sweep_scaling.sh [CERTLAB_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/certlab}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/scaling.toml" <<TOML
name = "scaling"
base = "$PWD/presets/fmnist-mlp-crown-ibp.toml"
seeds = [0, 1, 2, 3]
[set]
"dataset.train_size" = 12000
"train.epochs" = 2
"train.warmup_epochs" = 0
"train.ramp_epochs" = 1
"eval.robust_subset" = 500
TOML
cores=$(nproc)
for jobs in 1 2; do
  start=$(date +%s.%N)
  "$BIN" sweep "$work/scaling.toml" --out "$work/jobs$jobs" --jobs "$jobs" >/dev/null 2>"$work/jobs$jobs.log"
  end=$(date +%s.%N)
  awk -v j="$jobs" -v c="$cores" -v s="$start" -v e="$end" \
    'BEGIN{printf "--jobs %d (%d torch threads each): 4 runs in %.1f s\n", j, (c/j<1?1:c/j), e-s}'
done
