"""PnP-HQS with DPIR's schedule (Zhang et al. 2021, `main_dpir_deblur.py` + `utils_pnp.get_rho_sigma`).

    z_k = argmin_x ½‖Ax − y‖² + α_k/2‖x − x_{k−1}‖²      (A.prox_l2 with weight α_k)
    x_k = D_{σ_k}(z_k)

σ_k decreases log-uniformly from sigma_max to max(σ_y, sigma_min) over `iters` steps, and
α_k = λ·max(σ_y, sigma_y_floor)²/σ_k² (DPIR: λ = 0.23, floor 0.255/255, 8 iterations, 49/255 → σ_y).
DPIR's data step is exactly this prox: its FFT solution solves (HᵀH + α)x = Hᵀy + αz.
For SR, DPIR ends the σ schedule at max(sf/255, σ_y): set sigma_min = sf/255 in the config.

With a fixed σ and α and an exact Wiener denoiser (= prox_{σ²h}, h = −log p) the fixed point is
argmin_x ½(Ax − y)ᵀ(αI + AAᵀ)⁻¹(Ax − y) + σ²h(x) (the first term is the Moreau envelope of g/α): the MAP
for a noise covariance σ²(αI + AAᵀ) instead of σ_y²I. HQS without a schedule therefore does not reach
the MAP; the schedule is what makes it a good estimator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from invlab.solvers.base import Solver, Trace
from invlab.solvers.common import (SIGMA_FLOOR, check_positive, initial_iterate, relative_change,
                                   sigma_y_per_sample)


@dataclass
class PnPHQS(Solver):
    iters: int = 8
    sigma_max: float = 49.0 / 255.0           # first denoiser level
    sigma_min: float = SIGMA_FLOOR            # last level is max(σ_y, sigma_min)
    lam: float = 0.23                         # λ in α_k = λσ_y²/σ_k² (DPIR's tuned default)
    sigma_y_floor: float = SIGMA_FLOOR        # σ_y used in α_k is at least this (noiseless tasks)

    def schedule(self, sigma_y: Tensor) -> tuple[Tensor, Tensor]:
        """Per-iteration, per-sample (σ_k, α_k), each of shape (iters, B)."""
        check_positive(sigma_max=self.sigma_max, sigma_min=self.sigma_min, lam=self.lam,
                       sigma_y_floor=self.sigma_y_floor)
        first = torch.full_like(sigma_y, math.log(self.sigma_max))
        last = sigma_y.clamp_min(self.sigma_min).log()
        steps = torch.linspace(0.0, 1.0, self.iters, dtype=sigma_y.dtype, device=sigma_y.device)
        if self.iters == 1:
            steps = torch.ones_like(steps)  # a single step goes straight to the final level
        sigmas = torch.exp(first + steps[:, None] * (last - first))
        alphas = self.lam * sigma_y.clamp_min(self.sigma_y_floor) ** 2 / sigmas**2
        return sigmas, alphas

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:
        x = initial_iterate(y, A, x_init)
        sigmas, alphas = self.schedule(sigma_y_per_sample(A, x))
        for k in range(self.iters):
            z = A.prox_l2(x, y, alphas[k])
            x_prev = x
            x = prior.denoise(z, sigmas[k])
            trace(k, x, residual=relative_change(x, x_prev))
        return x
