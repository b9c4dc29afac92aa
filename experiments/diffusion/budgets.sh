#!/usr/bin/env bash
# Longer budgets than run.sh, on the same 50 table digits: DPS at the paper's 1,000 steps on every task, and
# DMPlug at 1,000 Adam iterations on the nonlinear blur (the paper: 5,000-10,000), where a trajectory can
# pass its best PSNR so that ES-WMV's stop is tested on a real overfitting phase. ~10 min per DPS task and
# ~35 min for DMPlug on one core:
#   OUT=multirun/diffusion bash experiments/diffusion/budgets.sh [dmplug] [tasks...]
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline}
OUT=${OUT:-multirun/diffusion}
ARGS=${*:-dmplug deblur sr2 inpaint_box phase_retrieval deblur_nonlinear quantized}
RUN=".venv/bin/python run.py -m experiment=diffusion/table logger=csv"
for a in $ARGS; do
  if [ "$a" = dmplug ]; then
    $RUN task=deblur_nonlinear solver=dmplug solver.iters=1000 track_best=true \
      hydra.sweep.dir=$OUT/deblur_nonlinear/dmplug1000
  else
    $RUN task=$a solver=dps solver.steps=1000 hydra.sweep.dir=$OUT/$a/dps1000
  fi
done
