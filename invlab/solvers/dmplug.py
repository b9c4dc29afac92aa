"""DMPlug: the diffusion model as a plug-in reconstruction map (Wang, Zhang, Li, Wan, Chen, Sun, NeurIPS 2024;
methods.md L; reference code sun-umn/DMPlug `sr_inp_nonlinear.py::dmplug`).

Instead of steering a sampler toward the measurements step by step (DPS, DiffPIR), DMPlug treats a whole
few-step deterministic sampler as a generator R and fits its input seed:

    R(z) = DDIM (η = 0) with `ddim_steps` steps on the prior's ε-network, started from z at the top step
           (3 steps: t = 666, 333, 0, diffusers' `set_timesteps(3)`), x̂0 clipped to [-1, 1] and ε̂ recomputed
           from it (`clip_sample=True`, `use_clipped_model_output=True`); the last step goes to ᾱ = 1
           (`set_alpha_to_one=True`), so R(z) is the clipped x̂0 of the last step
    min_z  ‖y − A(R(z))‖² / m   (per sample, m measurements)     by Adam (lr 1e-2) from z0 ~ N(0, I),

backpropagating through all `ddim_steps` network calls each iteration (so NFE = ddim_steps per iteration;
the backward passes are not counted). R(z) stays on the data manifold the sampler can reach, which is the
prior; the optimisation over z is the likelihood. Samples of a batch have independent seeds and the loss is
summed over the batch, so Adam (elementwise) treats each sample exactly as if it ran alone.

Like deep image prior, long runs fit the noise too: the reference code reports the best PSNR over the whole
trajectory (an oracle). `mode` chooses what is returned:
- es_wmv (default): ES-WMV early stopping (invlab/solvers/early_stop.py) per sample; a stopped sample's seed is
  frozen and it returns its minimum-variance iterate. The per-sample iteration of the returned iterate goes to
  results.csv as `iter_stop` and the iterations it ran as `iter_run`.
- oracle: all `iters` iterations, the last iterate returned; run the engine with `track_best=true` to record
  each sample's best PSNR over the trajectory (`psnr_best`, `iter_best`), the paper's reported number.
- none: all iterations, the last iterate.

The paper runs 5000 iterations (SR, inpainting) or 10000 (nonlinear deblur, BID) on 256×256 images with ES-WMV
defaults W = 100, P = 1000 from the DIP code; the defaults here are sized for 28×28 MNIST on a CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from invlab.errors import ConfigError
from invlab.priors.diffusion import from_model
from invlab.priors.schedule import ddim_step, descending_pairs
from invlab.solvers.base import Solver, Trace
from invlab.solvers.common import check_positive, expand
from invlab.solvers.diffusion_steps import initial_noise, require_diffusion
from invlab.solvers.early_stop import WindowedVarianceStop

MODES = ("es_wmv", "oracle", "none")


def ddim_decode(prior, z: Tensor, timesteps: list[int], clip_x0: bool = True) -> Tensor:
    """R(z): deterministic DDIM from x = z at timesteps[-1] down the ascending `timesteps` to ᾱ = 1, on the
    model's [-1, 1] scale; differentiable in z. Returns the last step's x̂0 (clamped to [-1, 1] if clip_x0)."""
    sched, x = prior.schedule, z
    for t, t_prev in descending_pairs(timesteps):
        tt = torch.full((x.shape[0],), float(t), dtype=torch.float64, device=x.device)
        eps = prior.eps(x, tt)
        x0 = sched.x0_from_eps(x, tt, eps)
        if clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = sched.eps_from_x0(x, tt, x0)
        x = ddim_step(sched, x0, eps, t, t_prev, 0.0)
    return x.clamp(-1, 1) if clip_x0 else x


@dataclass
class DMPlug(Solver):
    prior_kind: ClassVar[str] = "diffusion"  # built with a diffusion prior (its config selects ddpm_mnist)
    iters: int = 1000             # Adam iterations (paper: 5000 SR / inpainting, 10000 nonlinear deblur)
    lr: float = 1e-2              # Adam step on the seed z (paper: 1e-2)
    ddim_steps: int = 3           # DDIM steps inside R (paper: 3)
    skip: str = "uniform"         # timestep subsequence (uniform = diffusers' leading spacing: 666, 333, 0)
    clip_x0: bool = True          # clamp x̂0 to [-1, 1] in R (diffusers clip_sample)
    mode: str = "es_wmv"          # es_wmv | oracle | none (see module doc)
    window: int = 20              # ES-WMV window W (DIP ES-WMV default: 100)
    patience: int = 100           # ES-WMV patience P (DIP ES-WMV default: 1000)

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:
        require_diffusion(prior, "dmplug")
        if not getattr(prior, "differentiable", False):
            raise ConfigError(f"solver dmplug needs gradients through the prior; {prior.describe()} has none.")
        if self.mode not in MODES:
            raise ConfigError(f"dmplug mode must be one of {', '.join(MODES)}, got {self.mode!r}.")
        if int(self.iters) < 1 or int(self.ddim_steps) < 1:
            raise ConfigError(f"dmplug needs iters >= 1 and ddim_steps >= 1, got {self.iters}, {self.ddim_steps}.")
        check_positive(lr=self.lr)
        seq = prior.schedule.timesteps(self.ddim_steps, self.skip).tolist()
        stop = WindowedVarianceStop(self.window, self.patience) if self.mode == "es_wmv" else None
        z = initial_noise(y, A, generator)   # x_init is unused: the seed starts at N(0, I)
        z.requires_grad_(True)
        opt = torch.optim.Adam([z], lr=self.lr)
        for k in range(int(self.iters)):
            with torch.enable_grad():
                x = from_model(ddim_decode(prior, z, seq, self.clip_x0))
                # (B,) ‖y − A(x)‖²/m, the MSE; for an NLL data term (quantised sensing) the NLL per measurement
                loss = 2.0 * A.data_fidelity(x, y) / y[0].numel()
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()       # summed: each sample's seed gets its own loss's gradient
            x = x.detach()
            if stop is None:
                opt.step()
                trace(k, x, loss=loss.detach())
                continue
            stopped = stop.update(k, x)
            if bool(stopped.all()):
                trace(k, stop.result(), loss=loss.detach(), stopped=stopped.double())
                break
            z_before = z.detach().clone()
            opt.step()
            with torch.no_grad():   # a stopped sample's seed stays where it stopped
                z.copy_(torch.where(expand(stopped, z), z_before, z))
            trace(k, torch.where(expand(stopped, x), stop.result(), x), loss=loss.detach(), stopped=stopped.double())
        if stop is None:
            return x
        ran = torch.where(stop.stopped, stop.stop_iter, torch.full_like(stop.stop_iter, k)) + 1
        trace.per_sample["iter_stop"] = stop.answer_iter(k)     # the iteration of the returned iterate
        trace.per_sample["iter_run"] = ran                       # iterations computed for the sample
        return stop.result()
