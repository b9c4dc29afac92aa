#!/usr/bin/env bash
# Longer budgets than run.sh, on the same 50 table digits: DPS at the paper's 1,000 steps on every task given,
# DMPlug at 1,000 Adam iterations with the repo's lr 0.01 on the nonlinear blur (`dmplug`; the paper: 5,000-10,000
# iterations), where a trajectory can pass its best PSNR so that ES-WMV's stop is tested on a real overfitting
# phase, and DPnP-DDIM at the
# paper's full budget (`dpnp_full:<task>`: 16 outer iterations × 100 DDS levels + 1,000 Langevin steps).
# ~10 min per DPS task, ~35 min for DMPlug, ~15 min per DPnP task on one core:
#   OUT=multirun/diffusion bash experiments/diffusion/budgets.sh [dmplug] [dpnp_full:<task>...] [tasks...]
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline}
OUT=${OUT:-multirun/diffusion}
ARGS=${*:-dmplug deblur sr2 inpaint_box phase_retrieval deblur_nonlinear quantized}
RUN=".venv/bin/python run.py -m experiment=diffusion/table logger=csv"
for a in $ARGS; do
  if [ "${a%%:*}" = dpnp_full ]; then
    $RUN task=${a#*:} solver=dpnp solver.denoiser_sampler=ddim hydra.sweep.dir=$OUT/${a#*:}/dpnp_full
  elif [ "$a" = dmplug ]; then
    $RUN task=deblur_nonlinear solver=dmplug solver.iters=1000 solver.lr=0.01 track_best=true \
      hydra.sweep.dir=$OUT/deblur_nonlinear/dmplug1000
  else
    $RUN task=$a solver=dps solver.steps=1000 hydra.sweep.dir=$OUT/$a/dps1000
  fi
done
