#!/usr/bin/env bash
# Distribution-shift KL from measurements (issue 6, methods.md D): every number of experiments/shift/README.md.
# Usage: bash experiments/shift/run.sh [out_dir]   (~10 min on one CPU thread)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-outputs/shift}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"

# 1. Adapt the natural-image prior dncnn_gray to MNIST from 64 inpainting measurements only (masked loss).
# export_to_package=true: the KL and reconstruction steps below use it by name (prior=adapt_gray_mnist).
$PY train.py experiment=train/adapt_gray_mnist export_to_package=true logger=csv hydra.run.dir="$OUT/adapt" \
    trainer.enable_progress_bar=false

# 2. KL(p‖q), p = dncnn_mnist (all digits), from 100 clean test digits and from their measurements only:
#    block inpainting (16×16 cells, p=0.5, σ_y=0.1; the paper's) and MRI (R=4, σ_y=0.01). σ from 0.02: below it
#    the learned denoisers' error floor (‖D_p − D_q‖² ≈ 0.1 as σ → 0, where exact MMSE denoisers give 0) would
#    dominate the σ⁻³-weighted integral.
for SMIN in 0.02 0.002; do
  $PY shift.py --p dncnn_mnist --q dncnn_mnist04 adapt_gray_mnist dncnn_gray dncnn_lfw \
      --data mnist_test --data-set limit=100 --task inpaint_blocks mri \
      --sigma-min $SMIN --sigma-max 0.19 --n-sigmas 30 --out "$OUT/kl_smin$SMIN.json"
done

# 3. Reconstruction: PnP-ADMM block inpainting (cells dropped with p=0.2, σ_y=0.05; ρ=0.2, 100 iterations,
#    chosen on 10 training digits) on 100 test digits with each prior.
$PY run.py -m solver=pnp_admm solver.iters=100 solver.rho=0.2 task=inpaint_blocks task.sigma_y=0.05 \
    task.operator.drop_ratio=0.2 data=mnist_test data.limit=100 logger=none \
    prior=dncnn_mnist,dncnn_mnist04,adapt_gray_mnist,dncnn_gray,dncnn_lfw hydra.sweep.dir="$OUT/recon"
$PY scripts/make_table.py "$OUT/recon"
