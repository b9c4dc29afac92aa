"""DEQ: a PnP/RED operator trained end to end as a deep equilibrium model (methods.md I, Hu et al. 2023).

For a batch of clean patches x, the configured task measures y = A(x) + n, and the reconstruction is the
fixed point x* = T_θ(x*; y) of one of the solvers' own steps with the trainable denoiser D_θ:

    red:     T(x) = x − γ(Aᵀ(Ax − y) + τ(x − D_θ(x, σ)))     (= solver=red method=gd, invlab/solvers/red.py)
    pnp_pgd: T(x) = D_θ(x − γAᵀ(Ax − y), σ)                  (= solver=pnp_pgd, invlab/solvers/pnp_pgd.py)

with γ = `gamma`, or step_scale/(‖AᵀA‖ + τ) (red) and step_scale/‖AᵀA‖ (pnp_pgd) as the solvers compute it.

Forward: x_{k+1} = T(x_k) from x_0 = A's baseline (the solvers' start), under torch.no_grad(), until
‖x_{k+1} − x_k‖/‖x_{k+1}‖ ≤ tol for every sample or max_iters. Backward: Jacobian-free backprop (JFB,
Fung et al. 2022): one more step x̂ = T_θ(x*) is taken *with* autograd from the detached fixed point, and
the loss ‖x̂ − x‖² is differentiated through that step only. The exact implicit gradient would multiply
by (I − ∂T/∂x)⁻¹; JFB drops it, which is a descent direction when T is contractive in x, costs one
network backward, and needs no stored iterations. A batch whose iteration stops at max_iters above tol is
reported (a warning, `train/deq_converged` < 1 and the `nonconverged_steps` count in the model card),
and a non-finite iterate skips the optimizer step instead of training on it. The step map and the forward
iteration are the solvers' (invlab/solvers/fixed_point.py).

The exported network is a plain denoiser D_θ(x, σ) (loadable by prior=learned); its card names the
`run.py` solver settings that run the trained operator (the same step, `iters` = max_iters).
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from invlab.errors import ConfigError
from invlab.ops.task import derive_seed
from invlab.solvers.common import gradient_step, initial_iterate, per_sample
from invlab.solvers.fixed_point import STEPS, FixedPoint, deq_step, fixed_point
from invlab.train.common import PriorModule, psnr_per_image

log = logging.getLogger("invlab")


class DEQModule(PriorModule):
    def __init__(self, arch: dict, task: str = "deblur", task_overrides: tuple[str, ...] = (), step: str = "red",
                 tau: float = 0.25, gamma: float | None = None, step_scale: float = 1.0, power_iters: int = 30,
                 sigma_den: float = 0.02, max_iters: int = 30, tol: float = 1e-3, measure_seed: int = 0,
                 lr: float = 1e-4, weight_decay: float = 0.0, scheduler: str = "cosine", lr_min_ratio: float = 0.1,
                 warmup_steps: int = 0, time_budget_s: float | None = None, ema_decay: float | None = None,
                 val_seed: int = 1234):
        super().__init__()
        from invlab.utils.config import build, load_option

        if step not in STEPS:
            raise ConfigError(f"module.step must be one of {', '.join(STEPS)}, got {step!r}.")
        if not (max_iters >= 1 and tol > 0 and sigma_den > 0 and tau > 0):
            raise ConfigError("module.max_iters >= 1 and module.tol, sigma_den, tau > 0 are required.")
        self.save_hyperparameters()
        self._setup_prior(arch, ema_decay, val_sigmas=())
        self.task = build(load_option("task", task, list(task_overrides)))
        self.val_psnr_deq, self.val_psnr_input = MeanMetric(), MeanMetric()
        self.nonconverged_steps = 0

    # --- the DEQ --------------------------------------------------------------------------------------
    def solve(self, x: Tensor, index, seed: int, net: nn.Module | None = None) -> tuple[FixedPoint, Callable, Tensor]:
        """Measure x with the task (seeded per index), find the fixed point; returns it, T and y."""
        hp = self.hparams
        A, y = self.task.measure(x, [int(i) for i in index], seed=seed)
        x0 = initial_iterate(y, A, None)
        extra = hp.tau if hp.step == "red" else 0.0
        gamma = gradient_step(A, x0, hp.gamma, hp.step_scale, hp.power_iters, extra_lipschitz=extra)
        T = deq_step(hp.step, A, y, net if net is not None else self.net, per_sample(hp.sigma_den, x0), gamma, hp.tau)
        return fixed_point(T, x0, hp.max_iters, hp.tol), T, y

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        x = batch["x"]
        seed = derive_seed(self.hparams.measure_seed, self.global_step)  # fresh noise every step
        fp, T, _ = self.solve(x, batch["index"], seed)
        self.log("train/deq_iters", float(fp.iters), on_step=True, on_epoch=False, batch_size=x.shape[0])
        self.log("train/deq_residual", fp.residual.max(), on_step=True, on_epoch=False, batch_size=x.shape[0])
        self.log("train/deq_converged", float(fp.converged), on_step=True, on_epoch=False, batch_size=x.shape[0])
        if not fp.converged:
            self.nonconverged_steps += 1
            log.warning("DEQ fixed point did not converge at step %d: residual %.3g > tol %g after %d iterations%s",
                        self.global_step, float(fp.residual.max()), self.hparams.tol, fp.iters,
                        "" if fp.finite else " (non-finite iterate: step skipped)")
        if not fp.finite:
            return None  # Lightning skips the optimizer step
        x_hat = T(fp.x)  # JFB: the only step with a graph, from the detached fixed point
        loss = (x_hat.float() - x).pow(2).mean()
        self._log_train_loss(loss, x.shape[0])
        return loss

    # --- validation / export (reconstruction PSNR, not denoising PSNR) ---------------------------------
    def _val_psnr(self, batch: dict) -> tuple[Tensor, Tensor]:
        net = self.export_net()
        fp, _, y = self.solve(batch["x"], batch["index"], self.hparams.val_seed, net=net)
        return psnr_per_image(fp.x, batch["x"]), psnr_per_image(y.real if y.is_complex() else y, batch["x"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        deq, inp = self._val_psnr(batch)
        self.val_psnr_deq.update(deq)
        self.val_psnr_input.update(inp)

    def on_validation_epoch_end(self) -> None:
        self.log("val/psnr_deq", self.val_psnr_deq.compute(), prog_bar=True)
        self.log("val/psnr_input", self.val_psnr_input.compute())
        self.val_psnr_deq.reset()
        self.val_psnr_input.reset()

    @torch.no_grad()
    def evaluate(self, dataset, batch_size: int = 8) -> dict[str, float]:
        """Mean reconstruction PSNR of the DEQ (and of the measurement) over a dataset, for the card."""
        from torch.utils.data import DataLoader

        deq, inp = [], []
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            batch = {"x": batch["x"].to(self.device), "index": batch["index"]}
            d, i = self._val_psnr(batch)
            deq.append(d)
            inp.append(i)
        return {"psnr_deq": float(torch.cat(deq).mean()), "psnr_input": float(torch.cat(inp).mean())}

    def card(self) -> dict:
        hp = self.hparams
        solver = (f"solver=red solver.method=gd solver.tau={hp.tau}" if hp.step == "red" else "solver=pnp_pgd") + \
            (f" solver.gamma={hp.gamma}" if hp.gamma is not None else f" solver.step_scale={hp.step_scale}") + \
            f" solver.sigma_den={hp.sigma_den} solver.sigma_den_factor=null solver.iters={hp.max_iters}"
        return {"loss": "deq_jfb_mse", "task": hp.task, "task_overrides": list(hp.task_overrides),
                "deq": {k: hp[k] for k in ("step", "tau", "gamma", "step_scale", "sigma_den", "max_iters", "tol")},
                "run_with": f"task={hp.task} prior=learned {solver}",
                "nonconverged_steps": self.nonconverged_steps, "ema_decay": hp.ema_decay}

    # --- random patches: new crops each epoch (as DenoiserModule) -------------------------------------
    def on_train_start(self) -> None:
        super().on_train_start()
        self._set_data_epoch()

    def on_train_epoch_start(self) -> None:
        self._set_data_epoch()

    def _set_data_epoch(self) -> None:
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)


__all__ = ["DEQModule", "FixedPoint", "deq_step", "fixed_point"]
