#!/usr/bin/env bash
# APnP (methods.md B) vs image-domain PnP vs TV on gray_test (4 images at 128²): Gaussian deblur, SR ×2, SR ×4.
# Each sweep writes run dirs under $OUT; make_table reads them all. ~6 min on 1 busy CPU thread.
set -euo pipefail
OUT=${1:-/tmp/apnp/test}
COMMON="task=deblur,sr2,sr4 data=gray_test data.size=128 logger=none"
python run.py -m solver=apnp_hqs,apnp_admm $COMMON hydra.sweep.dir=$OUT/apnp                  # prior=dncnn_grad
python run.py -m solver=pnp_hqs,pnp_admm prior=dncnn_gray $COMMON hydra.sweep.dir=$OUT/pnp
python run.py -m solver=pnp_hqs,pnp_admm prior=tv $COMMON hydra.sweep.dir=$OUT/tv
python scripts/make_table.py $OUT
