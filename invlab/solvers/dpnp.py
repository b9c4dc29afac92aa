"""DPnP: diffusion plug-and-play posterior sampling (Xu & Chi, NeurIPS 2024; methods.md K).

A Gibbs sampler on π(z, u) ∝ p(z) N(u; z, η²) exp(−L(y; u)) on the prior's [-1, 1] model scale, alternating
    1. proximal consistency sampler (PCS): u ~ exp(−L(y; u) − ‖u − z_k‖²/(2η_k²)),  likelihood only;
    2. denoising diffusion sampler (DDS):  z_{k+1} ~ p(z | z + η_k w = u),           prior only,
with η_k annealed: η_max for k_start iterations, geometric down to η_min over k more, then k_settle
iterations at η_min. At a fixed η the z-marginal is the posterior under the likelihood smoothed by η (for a
linear Gaussian model: noise covariance σ_y²I + (η/2)²AAᵀ in image units); η → 0 gives p(x | y). The
settle phase is what makes the returned sample a draw from the η_min target: the reference code's
schedule (methods.md K) reaches η_min on its last iteration only, so the chain never runs at η_min and
its final sample lags behind the target (on the exact Gaussian model of tests/test_diffusion_samplers.py,
by many Monte-Carlo standard errors in the mean). k_settle = 0 is the reference code's schedule.

L(y; u) = ‖y − A(x)‖²/(2σ²), x = (u + 1)/2 (the affine map applied explicitly, so A and σ = σ_y stay in
[0, 1] image units; on the model scale that is σ_m = 2σ for linear A). σ is the task's σ_y unless
`sigma_lik` is set (the reference code's `multiplier`, 0.15 on its [-1, 1] scale).

PCS (diffusion_steps.proximal_langevin, shared with PnP-DM), as in the reference code (MALASampling with the
Metropolis step disabled): unadjusted Langevin with the exponential (OU) integrator for the quadratic coupling,
    u ← u + a(z_k − u) − η² a ∇L(u) + η √(1 − e^{−2h/η²}) ξ,   a = 1 − e^{−h/η²},
    h = pcs_scale · min(σ_m², η²) / (pcs_reg + ‖y_m − A_m u‖),   residual in model units (2‖y − A(x)‖).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from invlab.errors import ConfigError
from invlab.priors.diffusion import from_model, to_model
from invlab.solvers.base import Solver, Trace
from invlab.solvers.common import SIGMA_FLOOR, check_positive, initial_iterate, sigma_y_per_sample
from invlab.solvers.diffusion_steps import data_residual, denoising_sampler, proximal_langevin, randn_like
from invlab.solvers.dps import DPS


def eta_schedule(eta_max: float, eta_min: float, k_start: int, k: int, k_settle: int = 0) -> list[float]:
    """η_max for k_start iterations, then k values geometric from η_max to η_min (both ends included), then
    k_settle more at η_min."""
    tail = [eta_max * (eta_min / eta_max) ** (j / (k - 1)) for j in range(k)] if k > 1 else [eta_min] * k
    return [eta_max] * k_start + tail + [eta_min] * k_settle


@dataclass
class DPnP(Solver):
    prior_kind: ClassVar[str] = "diffusion"  # built with a diffusion prior (its config selects ddpm_mnist)
    eta_max: float = 0.4                  # η on the model scale ([-1, 1]); FFHQ configs 0.4 → 0.16
    eta_min: float = 0.16
    k_start: int = 4                      # iterations at η_max
    k: int = 12                           # geometric decay iterations
    k_settle: int = 4                     # iterations at η_min after the decay (K = k_start + k + k_settle)
    denoiser_sampler: str = "ddim"        # ddpm | ddim (the DDS variant)
    dds_steps: int = 100                  # levels (= NFE) per DDS call
    pcs_iters: int = 1000                 # Langevin steps per PCS call
    pcs_scale: float = 0.6                # h = scale·min(σ_m², η²)/(reg + residual)
    pcs_reg: float = 50.0
    sigma_lik: float | None = None        # likelihood σ in [0, 1] units; null: the task's σ_y
    init: str = "baseline"                # baseline (A⁺y / x_init) | noise (a prior-scale N(0, I) start) | dps
    init_steps: int = 100                 # init=dps: a DPS run of this many steps is the start (the paper's
    init_zeta: float = 0.3                # warm start: 500 DPS/LGD steps), with this ζ'; its NFE count
    clip: bool = True                     # clamp the returned image to [0, 1]

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:
        check_positive(eta_max=self.eta_max, eta_min=self.eta_min, pcs_scale=self.pcs_scale)
        if self.denoiser_sampler not in ("ddpm", "ddim") or self.init not in ("baseline", "noise", "dps"):
            raise ConfigError(f"dpnp: denoiser_sampler must be ddpm|ddim and init baseline|noise|dps, got "
                              f"{self.denoiser_sampler!r}, {self.init!r}.")
        if not (isinstance(self.k_settle, int) and self.k_settle >= 0):
            raise ConfigError(f"dpnp: k_settle (iterations at η_min) must be a whole number ≥ 0, got "
                              f"{self.k_settle!r}.")
        if self.init == "dps":   # the paper's warm start; DPS's own iterates are not traced
            x0 = DPS(steps=self.init_steps, zeta=self.init_zeta).solve(y, A, prior, x_init=None,
                                                                      generator=generator, trace=Trace())
        else:
            x0 = initial_iterate(y, A, x_init)
        z = randn_like(x0, generator) if self.init == "noise" else to_model(x0.clamp(0, 1))
        sigma = (sigma_y_per_sample(A, z) if self.sigma_lik is None
                 else torch.full((z.shape[0],), float(self.sigma_lik), dtype=z.dtype, device=z.device))
        sigma_m = 2.0 * sigma.clamp_min(SIGMA_FLOOR)                        # model units, (B,)
        for it, eta in enumerate(eta_schedule(self.eta_max, self.eta_min, self.k_start, self.k, self.k_settle)):
            u = self.pcs(z, y, A, sigma_m, eta, generator)
            z = denoising_sampler(prior, u, eta, steps=self.dds_steps, kind=self.denoiser_sampler,
                                  generator=generator)
            trace(it, from_model(z), eta=eta, data_residual=data_residual(A, y, z))
        x = from_model(z)
        return x.clamp(0, 1) if self.clip else x

    def pcs(self, z_k: Tensor, y: Tensor, A, sigma_m: Tensor, eta: float,
            generator: torch.Generator | None) -> Tensor:
        """Langevin chain for exp(−L(y; u) − ‖u − z_k‖²/(2η²)), started at z_k (diffusion_steps.proximal_langevin)."""
        return proximal_langevin(z_k, y, A, sigma_m, eta, iters=self.pcs_iters, scale=self.pcs_scale,
                                 reg=self.pcs_reg, generator=generator)
