"""RED: regularisation by denoising (Romano, Elad & Milanfar 2017; ODER's RED-DEQ step, methods.md I).

The prior enters through the residual x − D_σ(x), the gradient of ½xᵀ(x − D(x)) for denoisers with a
symmetric Jacobian. Three iterations reach the same fixed point ∇g(x) + τ(x − D_σ(x)) = 0:

    gd:          x ← x − γ(∇g(x) + τ(x − D_σ(x)))
    nesterov:    the same step taken from an extrapolated point (FISTA momentum), as in ODER
    fixed_point: x ← argmin_u ½‖A(u) − y‖² + τ/2‖u − D_σ(x)‖²   (A.prox_l2 with weight τ)

For a Wiener denoiser D(x) = Wx + (I − W)μ (Gaussian prior, W = Σ(Σ + σ²I)⁻¹) the fixed point minimises
½‖Ax − y‖² + τ/2 (x − μ)ᵀ(I − W)(x − μ). The default γ = step_scale/(‖AᵀA‖ + τ) bounds the Lipschitz
constant of that gradient (‖I − W‖ ≤ 1); for a nonlinear operator the default is step_scale/(1/γ_g + τ)
with γ_g a backtracking Armijo step on the data term at every iteration (common.ArmijoStep).

ODER (Liu et al. 2022; methods.md I) is this solver with `minibatch` set: each gd/nesterov step replaces
∇g(x) by the operator's unbiased minibatch estimate `A.stochastic_grad(x, y, minibatch, generator)` (CT:
a stratified random subset of the angles, rescaled; invlab/ops/radon.py), drawn from the solver's
generator, so a step costs a fraction of the measurement operator. The estimate is affine in x with
random coefficients drawn independently of the iterate, so the expected iterates follow the full-gradient
ones exactly and the fixed point is the same; single iterates keep a noise floor that shrinks with γ.
The step size keeps the full operator's bound. `nonnegative` projects every iterate onto x ≥ 0 (ODER).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invlab.errors import ConfigError
from invlab.solvers.base import Solver, Trace
from invlab.solvers.common import (check_positive, denoiser_sigma, initial_iterate, momentum, per_sample,
                                   relative_change, step_rule)

METHODS = ("gd", "nesterov", "fixed_point")


@dataclass
class RED(Solver):
    iters: int = 100
    method: str = "gd"                        # gd | nesterov | fixed_point
    tau: float = 0.1                          # weight of the RED regulariser
    gamma: float | None = None                # gradient step; None: step_scale/(‖AᵀA‖ + τ), Armijo if nonlinear
    step_scale: float = 1.0
    sigma_den: float = 0.05                   # denoiser noise level, [0,1] units
    sigma_den_factor: float | None = None     # if set, σ_den = factor·σ_y (per sample)
    power_iters: int = 30
    minibatch: float | int | None = None      # None: full ∇g; else a fraction (float) or count (int) of
                                              # the measurement groups per step (CT: angles), as ODER
    nonnegative: bool = False                 # clip every iterate at 0 (ODER)

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:
        if self.method not in METHODS:
            raise ConfigError(f"RED method {self.method!r} is not one of {', '.join(METHODS)}.")
        check_positive(tau=self.tau, gamma=self.gamma, step_scale=self.step_scale, sigma_den=self.sigma_den,
                       minibatch=self.minibatch)
        data_grad = self._data_gradient(A, y, generator)
        x = self._project(initial_iterate(y, A, x_init))
        sigma = denoiser_sigma(self.sigma_den, self.sigma_den_factor, A, x)
        if self.method == "fixed_point":
            tau = per_sample(self.tau, x)
            for k in range(self.iters):
                x_prev = x
                x = self._project(A.prox_l2(prior.denoise(x, sigma), y, tau))
                trace(k, x, residual=relative_change(x, x_prev))
            return x
        step = step_rule(A, y, x, self.gamma, self.step_scale, self.power_iters, extra_lipschitz=self.tau)
        z, t = x, 1.0
        for k in range(self.iters):
            x_prev = x
            grad = data_grad(z)
            x = self._project(z - step(z, grad) * (grad + self.tau * (z - prior.denoise(z, sigma))))
            z, t = momentum(x, x_prev, t, self.method == "nesterov")
            trace(k, x, residual=relative_change(x, x_prev))
        return x

    def _data_gradient(self, A, y: Tensor, generator: torch.Generator | None):
        """z ↦ ∇g(z), or its minibatch estimate when `minibatch` is set (checked before any work)."""
        if self.minibatch is None:
            return lambda z: A.grad(z, y)
        if self.method == "fixed_point":
            raise ConfigError("RED minibatch gradients need method=gd or nesterov; fixed_point uses the "
                              "operator's exact prox_l2, which has no minibatch form.")
        if not callable(getattr(A, "stochastic_grad", None)):
            raise ConfigError(f"RED minibatch={self.minibatch} needs an operator with a minibatch data "
                              f"gradient (stochastic_grad, e.g. CT's Radon); {type(A).__name__} has none: "
                              f"set solver.minibatch=null.")
        return lambda z: A.stochastic_grad(z, y, self.minibatch, generator)

    def _project(self, x: Tensor) -> Tensor:
        return x.clamp_min(0.0) if self.nonnegative else x
