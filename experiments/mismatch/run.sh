#!/usr/bin/env bash
# Prior mismatch and adaptation in PnP-ADMM (issue 5 item 7, methods.md G): every number of
# experiments/mismatch/README.md.  Usage: bash experiments/mismatch/run.sh [out_dir]  (~25 min, one CPU thread)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-outputs/mismatch}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"

# 1. Fine-tune the mismatched natural-image prior dncnn_gray on N clean MNIST training digits.
CKPTS=""
for N in 4 16 64; do
  $PY train.py experiment=train/mismatch_adapt data.limit=$N logger=csv hydra.run.dir="$OUT/adapt_$N" \
      trainer.enable_progress_bar=false
  CKPTS="$CKPTS,$OUT/adapt_$N/mismatch_adapt.safetensors"
done

# 2. PnP-ADMM SR×2 (Gaussian blur std 2 then ↓2, σ_y=0.01) on 50 MNIST test digits; ρ=0.0625 and 100
#    iterations, chosen on 10 training digits with dncnn_mnist. Matched prior (all digits), a near mismatch
#    (digits 0–4 only), the far mismatch (natural images), the far one adapted with N = 4, 16, 64 clean digits,
#    and adapt_gray_mnist (adapted from 64 inpainting measurements only; experiments/shift).
$PY run.py -m solver=pnp_admm solver.iters=100 solver.rho=0.0625 task=sr2 data=mnist_test data.limit=50 logger=none \
    prior=learned "prior.checkpoint=dncnn_mnist,dncnn_mnist04,dncnn_gray,adapt_gray_mnist$CKPTS" hydra.sweep.dir="$OUT/sr2"
$PY scripts/make_table.py "$OUT/sr2"
