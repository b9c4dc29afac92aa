"""PnP-ADMM (methods.md F and G): the prior's denoiser stands in for the proximal map of the regulariser.

    z_k = prox_{g/ρ}(x_{k−1} − s_{k−1})      data step, g = ½‖Ax − y‖²  (A.prox_l2 with weight ρ)
    x_k = D_σ(z_k + s_{k−1})                 prior step
    s_k = s_{k−1} + z_k − x_k                scaled dual update

When D_σ is the exact MMSE denoiser of a Gaussian prior it equals prox_{σ²h} with h = −log p, and the
iteration converges to argmin_x ½‖Ax − y‖² + ρσ²·h(x): the MAP (= posterior mean) when ρσ² = σ_y².
An increasing ρ (`rho_growth` > 1, Chan et al. 2017) forces the two splits together quickly; σ then
shrinks as σ_k = σ·√(ρ/ρ_k) so that ρ_k σ_k², the regularisation weight, stays fixed. That is also the
prior-mismatch paper's schedule (σ log-uniform from σ₁ to σ₂, ρ_i = 0.23σ_n²/σ_i²), with
rho = 0.23σ_n²/σ₁², sigma_den = σ₁ and rho_growth = (σ₁/σ₂)^(2/(iters−1)).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invlab.solvers.base import Solver, Trace
from invlab.solvers.common import (check_positive, denoiser_sigma, initial_iterate, per_sample,
                                   relative_change)


@dataclass
class PnPADMM(Solver):
    iters: int = 50
    rho: float = 1.0                          # weight of the ½ρ‖x − z‖² coupling (= 1/γ)
    rho_growth: float = 1.0                   # ρ_k = ρ·growth^k, capped at rho_max
    rho_max: float = 1e4
    sigma_den: float = 0.05                   # denoiser noise level, [0,1] units
    sigma_den_factor: float | None = None     # if set, σ_den = factor·σ_y (per sample)

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:
        check_positive(rho=self.rho, rho_growth=self.rho_growth, rho_max=self.rho_max, sigma_den=self.sigma_den)
        x = initial_iterate(y, A, x_init)
        sigma = denoiser_sigma(self.sigma_den, self.sigma_den_factor, A, x)
        s = torch.zeros_like(x)
        rho_prev = self.rho
        for k in range(self.iters):
            rho = min(self.rho * self.rho_growth**k, self.rho_max)
            if rho != rho_prev:  # s is the dual scaled by 1/ρ (Boyd et al. 2011, §3.4.1)
                s, rho_prev = s * (rho_prev / rho), rho
            z = A.prox_l2(x - s, y, per_sample(rho, x))
            x_prev = x
            x = prior.denoise(z + s, sigma if rho == self.rho else sigma * (self.rho / rho) ** 0.5)
            s = s + z - x
            trace(k, x, residual=relative_change(x, x_prev))
        return x
