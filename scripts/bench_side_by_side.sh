#!/bin/bash
# certlab bench --bounds and scripts/bench_autolirpa.py side by side, same session, same
# threads (THREADS, default: libtorch's), same models and batches: batch 256 for the training
# steps on the MLP 2x100 and the Small convnet, batch 32 for the Small convnet's CROWN and
# alpha-CROWN rows (auto_LiRPA's CROWN-Optimized, 20 iterations).
# Needs auto_LiRPA importable from LIRPA (default /tmp/lirpa; see scripts/bench_autolirpa.py).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/certlab}
LIRPA=${LIRPA:-/tmp/lirpa}
[ -n "${THREADS:-}" ] && export OMP_NUM_THREADS=$THREADS
peer() { PYTHONPATH=$LIRPA .venv/bin/python scripts/bench_autolirpa.py "$@" 2>&1 | grep '^auto_LiRPA'; }
"$BIN" bench --bounds --arch all --steps 30 \
    --methods ibp,crown-ibp,fastlin,crown,fastlin-proj50,sabr,mtl-ibp,cc-ibp,exp-ibp,crown-bound
peer 30 --arch all --methods IBP,CROWN-IBP,CROWN,CROWN-bound
"$BIN" bench --bounds --arch small-conv --batch 32 --steps 30 --methods crown,crown-bound,alpha-crown-bound
peer 30 --batch 32 --arch small-conv --methods CROWN,CROWN-bound,CROWN-Optimized-bound
