#!/usr/bin/env bash
# The validation sweeps behind conf/tuned/ and the README's investigation: 10 digits the table never uses
# (mnist_test start=500), the table's CPU budgets. Each sweep prints its table (scripts/make_table.py).
#   OUT=multirun/diffusion_sweeps bash experiments/diffusion/sweeps.sh [sweep...]     (default: all)
# sweeps: quantized_pnp_admm quantized_diffpir quantized_dps quantized_dpnp quantized_pnp_dm inpaint_diffpir
#         inpaint_dpnp_init pr_dpnp_init pnp_dm_reg diffpir_grad_step diffpir_linear dmplug_lr
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline}
OUT=${OUT:-multirun/diffusion_sweeps}
ALL="quantized_pnp_admm quantized_diffpir quantized_dps quantized_dpnp quantized_pnp_dm inpaint_diffpir
     inpaint_dpnp_init pr_dpnp_init pnp_dm_reg diffpir_grad_step diffpir_linear dmplug_lr"
RUN=".venv/bin/python run.py -m experiment=diffusion/table data.start=500 data.limit=10 batch_size=10 logger=csv"
DPNP="solver=dpnp solver.denoiser_sampler=ddim solver.k_start=2 solver.k=6 solver.k_settle=2 solver.dds_steps=25
      solver.pcs_iters=200"
PNPDM="solver=pnp_dm solver.iters=40 solver.dds_steps=10"
for s in ${*:-$ALL}; do
  d=$OUT/$s
  case $s in
    quantized_pnp_admm) $RUN task=quantized solver=pnp_admm prior=dncnn_mnist solver.sigma_den_factor=null \
                          'solver.rho=1,4,16,64' 'solver.sigma_den=0.1,0.2,0.4' hydra.sweep.dir=$d ;;
    quantized_diffpir)  $RUN task=quantized solver=diffpir 'solver.sigma_y_floor=0.1,0.3,1.0,3.0' hydra.sweep.dir=$d ;;
    quantized_dps)      $RUN task=quantized solver=dps solver.steps=200 'solver.zeta=0.3,1.0,3.0' hydra.sweep.dir=$d ;;
    quantized_dpnp)     $RUN task=quantized $DPNP 'solver.sigma_lik=0.18,0.3,0.5,1.0' 'solver.pcs_scale=0.2,0.6' \
                          hydra.sweep.dir=$d ;;
    quantized_pnp_dm)   $RUN task=quantized $PNPDM 'solver.sigma_lik=0.18,0.5,1.0' hydra.sweep.dir=$d ;;
    inpaint_diffpir)    $RUN task=inpaint_box solver=diffpir 'solver.lam=1.0,7.0' 'solver.zeta=0.3,1.0' \
                          'solver.steps=20,100' hydra.sweep.dir=$d ;;
    inpaint_dpnp_init)  $RUN task=inpaint_box solver=dps solver.steps=200 hydra.sweep.dir=$d/dps
                        $RUN task=inpaint_box $DPNP 'solver.init=baseline,dps' 'solver.init_steps=100,200' \
                          solver.init_zeta=0.5 hydra.sweep.dir=$d/dpnp ;;
    pr_dpnp_init)       $RUN task=phase_retrieval solver=dps solver.steps=200 hydra.sweep.dir=$d/dps
                        $RUN task=phase_retrieval $DPNP 'solver.init=baseline,dps' solver.init_steps=200 \
                          solver.init_zeta=1.0 'solver.pcs_scale=0.6,0.8' hydra.sweep.dir=$d/dpnp ;;
    pnp_dm_reg)         $RUN task=deblur_nonlinear $PNPDM 'solver.pcs_reg=50,3' 'solver.pcs_iters=100,200' \
                          hydra.sweep.dir=$d/deblur_nonlinear
                        for t in quantized phase_retrieval; do
                          $RUN task=$t $PNPDM 'solver.pcs_reg=50,3' solver.pcs_iters=100 hydra.sweep.dir=$d/$t
                        done ;;
    diffpir_grad_step)  for t in deblur_nonlinear phase_retrieval; do
                          $RUN task=$t solver=diffpir 'solver.lam=1.0,7.0' 'solver.grad_step_max=0.3,1.0,3.0' \
                            hydra.sweep.dir=$d/$t
                          $RUN task=$t solver=diffpir solver.lam=7.0 'solver.grad_step_max=10.0,30.0' \
                            hydra.sweep.dir=$d/${t}_large
                        done ;;
    diffpir_linear)     for t in deblur sr2 inpaint_box; do     # DiffPIR (100 NFE) vs DPS at its 1,000 steps
                          $RUN task=$t solver=dps solver.steps=1000 hydra.sweep.dir=$d/$t/dps1000
                          $RUN task=$t solver=diffpir solver.steps=100 'solver.lam=1.0,4.0,7.0,15.0' \
                            'solver.zeta=0.1,0.3,0.6,1.0' hydra.sweep.dir=$d/$t/diffpir
                        done ;;
    dmplug_lr)          $RUN task=deblur_nonlinear solver=dps solver.steps=1000 hydra.sweep.dir=$d/dps1000
                        $RUN task=deblur_nonlinear solver=dmplug solver.iters=300 'solver.lr=0.01,0.03,0.1,0.3' \
                          track_best=true hydra.sweep.dir=$d/dmplug ;;
    *) echo "unknown sweep $s (one of: $ALL)" >&2; exit 2 ;;
  esac
  .venv/bin/python scripts/make_table.py $d
done
