"""One denoiser call: the solver for the denoise task (A = identity) and a baseline for any other task.

x = D_σ(x₀), with x₀ = x_init or A.baseline(y) and σ = sigma_den_factor·σ_y (the measurement noise by
default) or a fixed `sigma_den`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invlab.solvers.base import Solver, Trace
from invlab.solvers.common import check_positive, denoiser_sigma, initial_iterate, relative_change


@dataclass
class Denoiser(Solver):
    sigma_den: float = 0.05                   # used only when sigma_den_factor is None
    sigma_den_factor: float | None = 1.0      # σ_den = factor·σ_y (per sample)

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:
        check_positive(sigma_den=self.sigma_den, sigma_den_factor=self.sigma_den_factor)
        x0 = initial_iterate(y, A, x_init)
        x = prior.denoise(x0, denoiser_sigma(self.sigma_den, self.sigma_den_factor, A, x0))
        trace(0, x, residual=relative_change(x, x0))
        return x
