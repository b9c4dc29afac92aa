"""PnP-DM: diffusion models as plug-and-play priors (Wu, Sun, Chen, Zhang, Yue & Bouman, NeurIPS 2024).

A split Gibbs sampler on π(x, z) ∝ p(x) N(z; x, ρ_k²I) exp(−L(y; z)) on the prior's [-1, 1] model scale,
alternating for k = 0 .. iters−1 with the coupling annealed as ρ_k = max(ρ_min, ρ_0 · decay^k):
    1. likelihood step  z ~ p(z | x_k, y) ∝ exp(−L(y; z) − ‖z − x_k‖²/(2ρ_k²))
    2. prior step       x_{k+1} ~ p(x | z) ∝ p(x) N(z; x, ρ_k²I)  = the denoising diffusion sampler
                        (diffusion_steps.denoising_sampler: the unconditional reverse process started at z
                        at level ρ_k; `dds_steps` NFE per iteration).
At a fixed ρ the x-marginal is the posterior under the likelihood smoothed by ρ (for y = Ax + σ_y n: noise
covariance σ_y²I + (ρ/2)²AAᵀ in [0, 1] image units, since ρ is on the model scale); ρ → 0 gives p(x | y).
It is DPnP's scheme (dpnp.py) with a different likelihood step and annealing; both share the prior step.

Likelihood step, L(y; z) = ‖y − A(x)‖²/(2σ²) with x = (z + 1)/2 and σ = σ_y (or `sigma_lik`), [0, 1] units:
- "exact" (linear A): perturb-and-MAP. In image units with r = ρ/2: x̃ = x_k + r ξ₁, ỹ = y + σ ξ₂, then
      z = argmin_u ‖ỹ − Au‖²/(2σ²) + ‖u − x̃‖²/(2r²) = A.prox_l2(x̃, ỹ, σ²/r²).
  This is an exact draw: z = P⁻¹(Aᵀỹ/σ² + x̃/r²) with P = AᵀA/σ² + I/r² is Gaussian with mean
  P⁻¹(Aᵀy/σ² + x_k/r²) and covariance P⁻¹(AᵀA/σ² + I/r²)P⁻¹ = P⁻¹ — the conditional's moments (the
  perturbation-optimisation identity; Papandreou & Yuille 2010, Orieux et al. 2012). Complex measurements
  get ξ₂ with N(0, 1) real and imaginary parts, as the Gaussian noise model draws them. For Poisson noise the
  Gaussian likelihood at the task's equivalent σ_y is what is sampled (as DPnP does).
- "langevin" (any A; "auto" picks it for nonlinear operators): DPnP's proximal consistency sampler
  (diffusion_steps.proximal_langevin) with η = ρ_k, `pcs_iters` steps.
The result is the last prior-step sample x_K, or the mean of the last `average_last` of them (a Monte-Carlo
posterior-mean estimate along the chain; 1 returns one posterior sample).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from invlab.errors import ConfigError
from invlab.priors.diffusion import from_model, to_model
from invlab.solvers.base import Solver, Trace
from invlab.solvers.common import SIGMA_FLOOR, check_positive, expand, initial_iterate, sigma_y_per_sample
from invlab.solvers.diffusion_steps import data_residual, denoising_sampler, proximal_langevin, randn_like


def rho_schedule(rho_0: float, decay: float, rho_min: float, iters: int) -> list[float]:
    """ρ_k = max(ρ_min, ρ_0 · decay^k), k = 0 .. iters−1."""
    return [max(rho_min, rho_0 * decay**k) for k in range(int(iters))]


def measurement_noise(y: Tensor, generator: torch.Generator | None) -> Tensor:
    """ξ shaped like y with N(0, 1) entries; complex y gets N(0, 1) real and imaginary parts (noise.py)."""
    if not y.is_complex():
        return randn_like(y, generator)
    pair = randn_like(torch.empty((*y.shape, 2), dtype=y.real.dtype, device=y.device), generator)
    return torch.view_as_complex(pair)


@dataclass
class PnPDM(Solver):
    prior_kind: ClassVar[str] = "diffusion"  # built with a diffusion prior (its config selects ddpm_mnist)
    rho_0: float = 10.0            # ρ_0, model scale; the config holds the tuned values
    decay: float = 0.9             # ρ_k = max(ρ_min, ρ_0 decay^k)
    rho_min: float = 0.3
    iters: int = 100               # Gibbs iterations K
    likelihood_step: str = "auto"  # auto (exact for linear A, else langevin) | exact | langevin
    denoiser_sampler: str = "ddpm"  # ddpm | ddim: the prior step's sampler
    dds_steps: int = 50            # NFE per prior step
    pcs_iters: int = 100           # Langevin steps per likelihood step (langevin only)
    pcs_scale: float = 0.6         # Langevin step scale, as DPnP's pcs_scale
    pcs_reg: float = 50.0
    sigma_lik: float | None = None  # likelihood σ in [0, 1] units; null: the task's σ_y
    average_last: int = 1          # return the mean of the last n samples x_k (1: the last sample)
    init: str = "baseline"         # baseline (A⁺y / x_init) | noise (N(0, I) on the model scale)
    clip: bool = True              # clamp the returned image to [0, 1]

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:
        check_positive(rho_0=self.rho_0, decay=self.decay, rho_min=self.rho_min, pcs_scale=self.pcs_scale)
        step = self.likelihood_step
        if step == "auto":
            step = "exact" if A.is_linear else "langevin"
        if step not in ("exact", "langevin") or self.denoiser_sampler not in ("ddpm", "ddim") \
                or self.init not in ("baseline", "noise"):
            raise ConfigError(f"pnp_dm: likelihood_step must be auto|exact|langevin, denoiser_sampler ddpm|ddim "
                              f"and init baseline|noise; got {self.likelihood_step!r}, {self.denoiser_sampler!r}, "
                              f"{self.init!r}.")
        if step == "exact" and not A.is_linear:
            raise ConfigError(f"pnp_dm: the exact likelihood step needs a linear operator, but {type(A).__name__} "
                              f"is nonlinear; use likelihood_step=langevin.")
        if not (int(self.iters) >= 1 and 1 <= int(self.average_last) <= int(self.iters) and self.decay <= 1):
            raise ConfigError(f"pnp_dm: need iters >= 1, 1 <= average_last <= iters and decay <= 1; got "
                              f"{self.iters}, {self.average_last}, {self.decay}.")
        x0 = initial_iterate(y, A, x_init)
        x = to_model(x0.clamp(0, 1)) if self.init == "baseline" else randn_like(x0, generator)
        sigma = (sigma_y_per_sample(A, x) if self.sigma_lik is None else
                 torch.full((x.shape[0],), float(self.sigma_lik), dtype=x.dtype, device=x.device))
        sigma = sigma.clamp_min(SIGMA_FLOOR)                                  # image units, (B,)
        rhos = rho_schedule(self.rho_0, self.decay, self.rho_min, self.iters)
        total = torch.zeros_like(x)
        for k, rho in enumerate(rhos):
            if step == "exact":
                z = self.exact_step(x, y, A, sigma, rho, generator)
            else:
                z = proximal_langevin(x, y, A, 2.0 * sigma, rho, iters=self.pcs_iters, scale=self.pcs_scale,
                                      reg=self.pcs_reg, generator=generator)
            x = denoising_sampler(prior, z, rho, steps=self.dds_steps, kind=self.denoiser_sampler,
                                  generator=generator)
            if k >= len(rhos) - int(self.average_last):
                total = total + x
            trace(k, from_model(x), rho=rho, data_residual=data_residual(A, y, x))
        out = from_model(total / int(self.average_last))
        return out.clamp(0, 1) if self.clip else out

    @staticmethod
    def exact_step(x: Tensor, y: Tensor, A, sigma: Tensor, rho: float,
                   generator: torch.Generator | None) -> Tensor:
        """One exact draw of z ~ p(z | x, y) for linear A by perturb-and-MAP (module doc); model scale."""
        r = rho / 2.0                                                          # ρ in image units
        x_tilde = from_model(x) + r * randn_like(x, generator)
        y_tilde = y + expand(sigma, y) * measurement_noise(y, generator)
        return to_model(A.prox_l2(x_tilde, y_tilde, sigma**2 / r**2))
