#!/usr/bin/env bash
# ODER vs full-gradient RED on sparse-view CT (90 angles, 128², sigma_y 0.05), as in README.md.
# Tuning on gray_val, then the report on gray_test; full RED = the same config with minibatch=null.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
COMMON="task=ct task.sigma_y=0.05 data.size=128 prior=dncnn_gray logger=none"
OUT=${OUT:-multirun/oder}

python run.py -m solver=oder solver.minibatch=null 'solver.tau=2,8,32,128,512' 'solver.sigma_den=0.02,0.05' \
  data=gray_val $COMMON hydra.sweep.dir=$OUT/tune2
python run.py -m solver=oder 'solver.minibatch=null,0.3333333333333333' 'solver.tau=32,64' \
  'solver.sigma_den=0.035,0.05' data=gray_val $COMMON hydra.sweep.dir=$OUT/tune3
python run.py -m solver=oder 'solver.minibatch=null,0.3333333333333333' seed=0,1 data=gray_test $COMMON \
  hydra.sweep.dir=$OUT/test
for dir in tune2 tune3 test; do python scripts/make_table.py $OUT/$dir; done

for mb in null 0.3333333333333333; do
  python experiments/oder/count_projections.py solver=oder solver.minibatch=$mb data=gray_test $COMMON batch_size=1
done
python experiments/oder/time_step.py
