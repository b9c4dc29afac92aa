"""DPS: diffusion posterior sampling (Chung et al., ICLR 2023; methods.md M).

DDPM ancestral sampling on the prior's [-1, 1] scale, each step followed by a likelihood correction
through the network:
    ẑ0 = (x_t − √(1−ᾱ_t) ε̂(x_t, t)) / √ᾱ_t                      Tweedie
    x' = ancestral step from (clip(ẑ0), ε̂) to t_prev             (DDIM η = 1: DDPM's β̃ variance)
    x_{t_prev} = x' − ζ ∇_{x_t} ‖y_m − A_m(ẑ0)‖                   the NORM, not its square
so the effective step on the squared norm is ζ/(2‖r‖) (the paper's ζ_t = ζ'/‖y − A(x̂0)‖ up to its
factor 2). The residual is measured on the model scale, as in the reference code (its operators act on
[-1, 1] images): ‖y_m − A_m(z)‖ = 2‖y − A((z + 1)/2)‖, which keeps the repo's ζ values (0.3 deblur/SR,
0.5 inpainting, 1.0 phase retrieval) meaningful here. `steps` < T walks a uniform subsequence (respaced
DDPM, `skip`). The norm is √(2·A.data_fidelity): for 1-bit quantised sensing, whose data term is a
negative log-likelihood, DPS then follows ∇√(2·NLL). Known bias (tests/test_diffusion_samplers.py): for a Gaussian prior and linear A its
samples are not posterior samples (mean off, spread too small).
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
from invlab.solvers.common import check_positive
from invlab.solvers.diffusion_steps import initial_noise, likelihood_norm, randn_like, require_diffusion


@dataclass
class DPS(Solver):
    prior_kind: ClassVar[str] = "diffusion"  # built with a diffusion prior (its config selects ddpm_mnist)
    steps: int = 1000             # DDPM steps (the paper: all T = 1000)
    zeta: float = 0.3             # ζ' (repo `scale`): 0.3 deblur / SR, 0.5 inpainting, 1.0 phase retrieval
    skip: str = "uniform"         # timestep subsequence when steps < T
    clip_x0: bool = True          # clamp ẑ0 to [-1, 1] in the ancestral step (guided-diffusion clip_denoised)
    clip: bool = True             # clamp the returned image to [0, 1]

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:
        require_diffusion(prior, "dps")
        if not getattr(prior, "differentiable", False):
            raise ConfigError(f"solver dps needs gradients through the prior; {prior.describe()} has none.")
        check_positive(zeta=self.zeta)
        sched = prior.schedule
        seq = sched.timesteps(self.steps, self.skip).tolist()
        x = initial_noise(y, A, generator)   # x_init is unused: DPS starts from x_T ~ N(0, I)
        for k, (t, t_prev) in enumerate(descending_pairs(seq)):
            tt = torch.full((x.shape[0],), float(t), dtype=torch.float64, device=x.device)
            with torch.enable_grad():
                x_t = x.detach().requires_grad_(True)
                eps = prior.eps(x_t, tt)
                z0 = sched.x0_from_eps(x_t, tt, eps)
                norm = 2.0 * likelihood_norm(A, y, from_model(z0))   # model units: ‖y_m − A_m(ẑ0)‖
                (grad,) = torch.autograd.grad(norm.sum(), x_t)
            z0, eps = z0.detach(), eps.detach()
            if self.clip_x0:
                z0 = z0.clamp(-1, 1)
                eps = sched.eps_from_x0(x, tt, z0)
            noise = randn_like(x, generator) if t_prev >= 0 else None
            x = ddim_step(sched, z0, eps, t, t_prev, 1.0, noise) - self.zeta * grad
            trace(k, from_model(z0), data_residual=norm.detach() / 2.0)
        out = from_model(x.detach())
        return out.clamp(0, 1) if self.clip else out
