"""DiffPIR: denoising diffusion models for plug-and-play image restoration (Zhu et al., CVPRW 2023;
methods.md M).

On the prior's [-1, 1] scale, over `steps` timesteps with DiffPIR's quadratic skip (dense near t = 0),
starting from x_T ~ N(0, I):
    1. ẑ0 = Tweedie from the network at t;
    2. data step (skipped at the last step), in [0, 1] image units x̂0 = (ẑ0 + 1)/2:
         x̂0 ← argmin_x ½‖y − A x‖² + ½ρ_t‖x − x̂0‖² = A.prox_l2(x̂0, y, ρ_t),   ρ_t = λ σ_y² / σ̄_t²
       for a linear A (closed form where the operator has one); a nonlinear A takes one gradient step
       x̂0 ← x̂0 − γ_t ∇½‖y − A(x̂0)‖² with γ_t = min(1/ρ_t, grad_step_max) (the paper's eq. 13 step);
    3. ε̂ = (x_t − √ᾱ_t ẑ0)/√(1−ᾱ_t);
    4. x_{t_prev} = √ᾱ_{t_prev} ẑ0 + √(1−ᾱ_{t_prev}) (√(1−ζ) ε̂ + √ζ ξ).
Units of ρ_t, exactly as the reference code: σ_y in [0, 1] units (floored at 0.001), σ̄_t = √((1−ᾱ_t)/ᾱ_t)
the model-scale level, the prox in [0, 1] units. In consistent [0, 1] units Tweedie's estimate carries
noise σ̄_t/2, so the Bayesian weight would be 4σ_y²/σ̄_t²: the paper's λ = 1 is a quarter of that
(λ = 4 weighs prior and data as a MAP would).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from invlab.errors import ConfigError
from invlab.priors.diffusion import from_model, to_model
from invlab.priors.schedule import descending_pairs
from invlab.solvers.base import Solver, Trace
from invlab.solvers.common import check_positive, expand, sigma_y_per_sample
from invlab.solvers.diffusion_steps import data_residual, initial_noise, randn_like, require_diffusion


@dataclass
class DiffPIR(Solver):
    prior_kind: ClassVar[str] = "diffusion"  # built with a diffusion prior (its config selects ddpm_mnist)
    steps: int = 100              # NFE (the paper: 100; 20 for inpainting)
    lam: float = 1.0              # λ in ρ_t = λσ_y²/σ̄_t²
    zeta: float = 0.1             # ζ: share of fresh noise when re-noising (1: DDPM-like, 0: DDIM-like)
    skip: str = "diffpir"         # timestep subsequence: diffpir (quad, dense near 0) | quad | uniform
    sigma_y_floor: float = 0.001  # the reference code's max(0.001, σ_y): noiseless tasks keep a finite ρ_t
    grad_step_max: float = 1.0    # cap on the gradient step for nonlinear operators ([0, 1] units)
    clip: bool = True             # clamp the returned image to [0, 1]

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:
        require_diffusion(prior, "diffpir")
        check_positive(lam=self.lam, sigma_y_floor=self.sigma_y_floor, grad_step_max=self.grad_step_max)
        if not 0.0 <= self.zeta <= 1.0:
            raise ConfigError(f"diffpir: zeta must be in [0, 1], got {self.zeta}.")
        sched = prior.schedule
        seq = sched.timesteps(self.steps, self.skip).tolist()
        x = initial_noise(y, A, generator)
        sigma_y2 = sigma_y_per_sample(A, x).clamp_min(self.sigma_y_floor) ** 2
        for k, (t, t_prev) in enumerate(descending_pairs(seq)):
            tt = torch.full((x.shape[0],), float(t), dtype=torch.float64, device=x.device)
            z0 = prior.x0(x, tt)
            if t_prev >= 0:
                rho = self.lam * sigma_y2 / float(sched.sigma(t)) ** 2
                x0 = from_model(z0)
                if A.is_linear:
                    x0 = A.prox_l2(x0, y, rho)
                else:
                    x0 = x0 - expand((1.0 / rho).clamp(max=self.grad_step_max), x0) * A.grad(x0, y)
                z0 = to_model(x0)
            trace(k, from_model(z0), data_residual=data_residual(A, y, z0))
            if t_prev < 0:
                x = z0
                break
            eps = sched.eps_from_x0(x, tt, z0)
            ab_prev = float(sched.alpha_bar(t_prev))
            mix = math.sqrt(1 - self.zeta) * eps + math.sqrt(self.zeta) * randn_like(x, generator)
            x = math.sqrt(ab_prev) * z0 + math.sqrt(1 - ab_prev) * mix
        out = from_model(x)
        return out.clamp(0, 1) if self.clip else out
