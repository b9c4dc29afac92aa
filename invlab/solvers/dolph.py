"""DOLPH: diffusion models for phase retrieval (Shoushtari, Liu & Kamilov, arXiv 2211.00529; methods.md J).

DDPM ancestral sampling on the prior's [-1, 1] scale, each reverse step followed by a gradient step on the
data fidelity g(x) = ½‖y − A(x)‖² (phase retrieval: ½‖y − |Ax|‖²), in [0, 1] image units:
    ẑ0 = Tweedie from ε̂(x_t, t);  x' = ancestral step from (clip(ẑ0), ε̂) to t_prev (DDIM η = 1, as DPS)
    at="xt" (the paper, Fig. 1):  v = x'/√ᾱ',  x_{t_prev} = √ᾱ' (v − 2γ_t ∇g((v + 1)/2))
    at="x0" (no extra NFE):       x_{t_prev} = x' − 2γ_t √ᾱ' ∇g((ẑ0 + 1)/2)
with ᾱ' = ᾱ_{t_prev}. "xt" maps the fresh sample to image units through its variance-exploding form
v = z0 + σ ε (the scale the network's Tweedie and the data live on; ᾱ' → 1 at the end, where it is the
paper's x' − γ∇g(x')), steps there and maps back. The factor 2 turns an image-unit step x ← x − γ_t ∇g(x)
into the model scale (z = 2x − 1). "x0" is the ancestral step taken from the corrected estimate
ẑ0 − 2γ_t ∇g (ε̂ kept): x' is affine in ẑ0 with slope √ᾱ'. Neither differentiates through the network, so
any diffusion prior works; NFE = steps.

The paper gives no step size. Rules (`gamma_rule`; ᾱ' = 1 at the last step):
    constant: γ_t = γ;   alpha_bar: γ_t = γ ᾱ'  (off while x' is mostly noise, full as the image forms);
    noise:    γ_t = γ (1 − ᾱ')  (strongest early, none at the last step).
For Fourier phase retrieval with the orthonormal FFT, ∇g(x) = x − Re crop F⁻¹(y · Fx/|Fx|), so γ_t = 1 is
exactly one error-reduction (ER) projection onto the measured magnitudes and γ ∈ (0, 1] a relaxed one.
γ = 0 is plain (unconditional) DDPM sampling.
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
from invlab.solvers.diffusion_steps import data_residual, initial_noise, randn_like, require_diffusion

RULES = ("constant", "alpha_bar", "noise")


def step_size(gamma: float, rule: str, alpha_bar_prev: float) -> float:
    """γ_t for one reverse step (module doc)."""
    if rule == "constant":
        return gamma
    return gamma * (alpha_bar_prev if rule == "alpha_bar" else 1.0 - alpha_bar_prev)


def data_gradient(A, y: Tensor, z: Tensor) -> Tensor:
    """∇_x ½‖y − A(x)‖² at x = (z + 1)/2, in image units (A.grad: closed form or autograd)."""
    return A.grad(from_model(z), y)


@dataclass
class DOLPH(Solver):
    prior_kind: ClassVar[str] = "diffusion"  # built with a diffusion prior (its config selects ddpm_mnist)
    steps: int = 1000             # DDPM steps (fewer: respaced DDPM, uniform skip); NFE = steps
    gamma: float = 0.5            # γ, image units; 0: plain DDPM. The config holds the tuned value
    gamma_rule: str = "alpha_bar"  # constant | alpha_bar | noise (module doc)
    at: str = "xt"                # xt: gradient at the DDPM sample x' (the paper) | x0: at Tweedie's ẑ0
    skip: str = "uniform"         # timestep subsequence when steps < T
    clip_x0: bool = True          # clamp ẑ0 to [-1, 1] in the ancestral step
    clip: bool = True             # clamp the returned image to [0, 1]

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:
        require_diffusion(prior, "dolph")
        if self.gamma_rule not in RULES or self.at not in ("xt", "x0") or not self.gamma >= 0:
            raise ConfigError(f"dolph: gamma_rule must be one of {'|'.join(RULES)}, at xt|x0 and gamma >= 0; "
                              f"got {self.gamma_rule!r}, {self.at!r}, {self.gamma}.")
        sched = prior.schedule
        seq = sched.timesteps(self.steps, self.skip).tolist()
        x = initial_noise(y, A, generator)   # x_init is unused: DDPM starts from x_T ~ N(0, I)
        for k, (t, t_prev) in enumerate(descending_pairs(seq)):
            tt = torch.full((x.shape[0],), float(t), dtype=torch.float64, device=x.device)
            eps = prior.eps(x, tt)
            z0 = sched.x0_from_eps(x, tt, eps)
            if self.clip_x0:
                z0 = z0.clamp(-1, 1)
                eps = sched.eps_from_x0(x, tt, z0)
            noise = randn_like(x, generator) if t_prev >= 0 else None
            x = ddim_step(sched, z0, eps, t, t_prev, 1.0, noise)
            ab_prev = float(sched.alpha_bar(t_prev))
            gamma_t = step_size(self.gamma, self.gamma_rule, ab_prev)
            if gamma_t > 0:
                point = x / ab_prev**0.5 if self.at == "xt" else z0    # xt: the noisy sample in VE form
                x = x - 2.0 * gamma_t * ab_prev**0.5 * data_gradient(A, y, point)
            trace(k, from_model(z0), gamma=gamma_t, data_residual=data_residual(A, y, z0))
        out = from_model(x)
        return out.clamp(0, 1) if self.clip else out
