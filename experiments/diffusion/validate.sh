#!/usr/bin/env bash
# Where a claim failed in the table: the same solvers at their papers' full budgets, on 10 validation digits
# the table never uses (mnist_test start=500), to see whether the CPU-sized budgets are what failed (README).
#   OUT=multirun/diffusion_val bash experiments/diffusion/validate.sh [tasks...]
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline}
OUT=${OUT:-multirun/diffusion_val}
TASKS=${*:-phase_retrieval}
RUN=".venv/bin/python run.py -m experiment=diffusion/table data.start=500 data.limit=10 batch_size=10 logger=csv"
for task in $TASKS; do
  d=$OUT/$task
  $RUN task=$task solver=dps solver.steps=200,1000 hydra.sweep.dir=$d/dps
  $RUN task=$task solver=dpnp solver.denoiser_sampler=ddim solver.k_start=2 solver.k=6 solver.dds_steps=25 \
    solver.pcs_iters=200 hydra.sweep.dir=$d/dpnp_small
  $RUN task=$task solver=dpnp solver.denoiser_sampler=ddim hydra.sweep.dir=$d/dpnp_full
  .venv/bin/python experiments/diffusion/table.py $d
done
