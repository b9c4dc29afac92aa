#!/usr/bin/env bash
# PnP-ADMM with fixed ρ and σ (rho_growth = 1), 200 iterations: spectrally normalised DnCNN vs DRUNet
# (methods.md F). ρ and σ_den were chosen on gray_val (2 images, 128 px, 100 iterations); see README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python experiments/pnp_convergence/curves.py \
  --priors dncnn_gray_sn drunet_gray --tasks deblur cs \
  --data gray_test --data-set size=128 limit=4 --iters 200 \
  --solver-set deblur:rho=0.05 deblur:sigma_den_factor=4 cs:rho=0.05 cs:sigma_den_factor=10 \
  --at 1 10 50 100 --lipschitz \
  --out experiments/pnp_convergence/curves.json --plot experiments/pnp_convergence/residuals.png

# CS again with a 20× larger ρ (a smaller ADMM step γ = 1/ρ, the regime of the convergence theorem).
OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python experiments/pnp_convergence/curves.py \
  --priors dncnn_gray_sn drunet_gray --tasks cs \
  --data gray_test --data-set size=128 limit=4 --iters 200 \
  --solver-set cs:rho=1.0 cs:sigma_den_factor=10 \
  --at 1 10 50 100 --lipschitz \
  --out experiments/pnp_convergence/curves_cs_rho1.json --plot experiments/pnp_convergence/residuals_cs_rho1.png
