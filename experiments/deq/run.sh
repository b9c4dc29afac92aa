#!/usr/bin/env bash
# DEQ robustness (issue 5 item 4, methods.md I): the commands behind experiments/deq/README.md, one after the
# other (they were run one by one with OUT=/tmp/runs/deq_exp). Usage: bash experiments/deq/run.sh [out_dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-outputs/deq}
PY=${PY:-.venv/bin/python}
RED="solver=red solver.method=gd solver.tau=0.25 solver.sigma_den=0.02 solver.sigma_den_factor=null"
DATA="data=gray_test data.size=128 data.limit=4 logger=none prior=learned"

# 1. DEQ (RED step, ≤ 30 iterations) trained on kernel A1 = Gaussian std 2 (conf/task/deblur), from dncnn_gray, 10 min.
$PY train.py experiment=train/deq_deblur trainer.max_time=00:00:10:00 logger=csv trainer.enable_progress_bar=false \
    trainer.log_every_n_steps=5 hydra.run.dir="$OUT/train"

# 2. The same RED operator with the plain dncnn_gray (30 and 100 iterations) and the DEQ denoiser (30 iterations),
#    on A1 (deblur) and A2 (deblur_motion: random motion kernels), σ_y = 0.02 both.
for TASK in deblur deblur_motion; do
  for ITERS in 30 100; do
    $PY run.py $RED solver.iters=$ITERS task=$TASK $DATA prior.checkpoint=dncnn_gray hydra.run.dir="$OUT/${TASK}_plain$ITERS"
  done
  $PY run.py $RED solver.iters=30 task=$TASK $DATA prior.checkpoint="$OUT/train/deq_deblur.safetensors" \
      hydra.run.dir="$OUT/${TASK}_deq30"
done
