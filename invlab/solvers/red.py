"""RED: regularisation by denoising (Romano, Elad & Milanfar 2017; ODER's RED-DEQ step, methods.md I).

The prior enters through the residual x − D_σ(x), the gradient of ½xᵀ(x − D(x)) for denoisers with a
symmetric Jacobian. Three iterations reach the same fixed point ∇g(x) + τ(x − D_σ(x)) = 0:

    gd:          x ← x − γ(∇g(x) + τ(x − D_σ(x)))
    nesterov:    the same step taken from an extrapolated point (FISTA momentum), as in ODER
    fixed_point: x ← argmin_u ½‖A(u) − y‖² + τ/2‖u − D_σ(x)‖²   (A.prox_l2 with weight τ)

For a Wiener denoiser D(x) = Wx + (I − W)μ (Gaussian prior, W = Σ(Σ + σ²I)⁻¹) the fixed point minimises
½‖Ax − y‖² + τ/2 (x − μ)ᵀ(I − W)(x − μ). The default γ = step_scale/(‖AᵀA‖ + τ) bounds the Lipschitz
constant of that gradient (‖I − W‖ ≤ 1); nonlinear operators need `gamma` unless method is fixed_point.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invlab.errors import ConfigError
from invlab.solvers.base import Solver, Trace
from invlab.solvers.common import (check_positive, denoiser_sigma, gradient_step, initial_iterate, momentum,
                                   per_sample, relative_change)

METHODS = ("gd", "nesterov", "fixed_point")


@dataclass
class RED(Solver):
    iters: int = 100
    method: str = "gd"                        # gd | nesterov | fixed_point
    tau: float = 0.1                          # weight of the RED regulariser
    gamma: float | None = None                # gradient step; None: step_scale/(‖AᵀA‖ + τ)
    step_scale: float = 1.0
    sigma_den: float = 0.05                   # denoiser noise level, [0,1] units
    sigma_den_factor: float | None = None     # if set, σ_den = factor·σ_y (per sample)
    power_iters: int = 30

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:
        if self.method not in METHODS:
            raise ConfigError(f"RED method {self.method!r} is not one of {', '.join(METHODS)}.")
        check_positive(tau=self.tau, gamma=self.gamma, step_scale=self.step_scale, sigma_den=self.sigma_den)
        x = initial_iterate(y, A, x_init)
        sigma = denoiser_sigma(self.sigma_den, self.sigma_den_factor, A, x)
        if self.method == "fixed_point":
            tau = per_sample(self.tau, x)
            for k in range(self.iters):
                x_prev = x
                x = A.prox_l2(prior.denoise(x, sigma), y, tau)
                trace(k, x, residual=relative_change(x, x_prev))
            return x
        step = gradient_step(A, x, self.gamma, self.step_scale, self.power_iters, extra_lipschitz=self.tau)
        z, t = x, 1.0
        for k in range(self.iters):
            x_prev = x
            x = z - step * (A.grad(z, y) + self.tau * (z - prior.denoise(z, sigma)))
            z, t = momentum(x, x_prev, t, self.method == "nesterov")
            trace(k, x, residual=relative_change(x, x_prev))
        return x
