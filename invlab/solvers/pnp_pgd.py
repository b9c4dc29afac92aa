"""PnP proximal gradient (PnP-PGD / PnP-ISTA) and its Nesterov-accelerated form (PnP-FISTA).

    x_k = D_σ(z_k − γ∇g(z_k)),   g = ½‖A(x) − y‖²   (A.grad: Aᵀ(Ax − y), or autograd when nonlinear)
    z_{k+1} = x_k                                   (PGD)
    z_{k+1} = x_k + (t_k − 1)/t_{k+1}·(x_k − x_{k−1}),  t_{k+1} = (1 + √(1 + 4t_k²))/2   (FISTA)

With an exact Wiener denoiser (= prox_{σ²h}, h = −log p) both converge to argmin_x g(x) + (σ²/γ)·h(x),
for γ ≤ 1/‖AᵀA‖. The default γ = step_scale/‖AᵀA‖ uses a power-iteration estimate for a linear operator;
for a nonlinear one (phase retrieval, quantised sensing, the nonlinear blur) the default is a backtracking
Armijo step on g at every iteration (common.ArmijoStep); `gamma` fixes the step in either case.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invlab.solvers.base import Solver, Trace
from invlab.solvers.common import (check_positive, denoiser_sigma, initial_iterate, momentum, relative_change,
                                   step_rule)


@dataclass
class PnPPGD(Solver):
    iters: int = 100
    gamma: float | None = None                # gradient step; None: step_scale/‖AᵀA‖ (linear A), Armijo (nonlinear)
    step_scale: float = 1.0
    fista: bool = False                       # Nesterov momentum (FISTA)
    sigma_den: float = 0.05                   # denoiser noise level, [0,1] units
    sigma_den_factor: float | None = None     # if set, σ_den = factor·σ_y (per sample)
    power_iters: int = 30                     # power-iteration steps for ‖AᵀA‖

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:
        check_positive(gamma=self.gamma, step_scale=self.step_scale, sigma_den=self.sigma_den)
        x = initial_iterate(y, A, x_init)
        sigma = denoiser_sigma(self.sigma_den, self.sigma_den_factor, A, x)
        step = step_rule(A, y, x, self.gamma, self.step_scale, self.power_iters)
        z, t = x, 1.0
        for k in range(self.iters):
            x_prev = x
            grad = A.grad(z, y)
            x = prior.denoise(z - step(z, grad) * grad, sigma)
            z, t = momentum(x, x_prev, t, self.fista)
            trace(k, x, residual=relative_change(x, x_prev))
        return x
