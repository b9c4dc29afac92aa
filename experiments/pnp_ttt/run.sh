#!/usr/bin/env bash
# PnP-TTT (issue 5 item 5, methods.md E): a natural-image denoiser (prior=dncnn_gray) adapted at test time
# on each 64² MRI phantom's own k-space, at R = 4 and 8; every number of experiments/pnp_ttt/README.md.
# Usage: bash experiments/pnp_ttt/run.sh [out_dir]        (TUNE=1 also reruns the validation sweep)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-outputs/pnp_ttt}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
mkdir -p "$OUT"
COMMON="task=mri data=phantoms data.size=64 data.n=8 prior=dncnn_gray logger=none"   # test: phantoms 0-7

# 0. (TUNE=1) validation on phantoms 8-11 (not in the test set): the no-TTT σ, JFB vs Neumann, steps, lr.
if [[ "${TUNE:-0}" == 1 ]]; then
  $PY experiments/pnp_ttt/tune.py "ttt_steps=0,sigma_den=0.03" "ttt_steps=0" "neumann_iters=0" "ttt_steps=10" \
      "ttt_steps=20" "lr=3e-5" "sigma_den=0.06,ttt_steps=0" "sigma_den=0.06" | tee "$OUT/tune.md"
  ACCS=4 $PY experiments/pnp_ttt/tune.py "holdout=0" "holdout=0,neumann_iters=0,ttt_steps=30" | tee -a "$OUT/tune.md"
fi

# 1. Test: the same solver without TTT (ttt_steps=0, = solver=pnp_pgd σ 0.04, 100 iterations) and with TTT
#    (conf/solver/pnp_ttt.yaml: 10 Adam steps, Neumann implicit gradient), then TTT with the JFB gradient.
$PY run.py -m solver=pnp_ttt 'solver.ttt_steps=0,10' 'task.operator.acceleration=4,8' $COMMON \
    hydra.sweep.dir="$OUT/test"
$PY run.py -m solver=pnp_ttt solver.neumann_iters=0 'task.operator.acceleration=4,8' $COMMON \
    hydra.sweep.dir="$OUT/test_jfb"
# 2. Reference: PnP-ADMM with its shipped settings and the same denoiser.
$PY run.py -m solver=pnp_admm 'task.operator.acceleration=4,8' $COMMON hydra.sweep.dir="$OUT/admm"
for dir in test test_jfb admm; do $PY scripts/make_table.py "$OUT/$dir"; done
