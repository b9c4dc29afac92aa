"""Steps the diffusion solvers (DPS, DiffPIR, DPnP, PnP-DM, DOLPH) share, on the prior's [-1, 1] model scale.

Two parametrisations of the same noisy point (see invlab/priors/schedule.py):
    VP: x_t = √ᾱ_t z0 + √(1−ᾱ_t) ε        (the network's input)
    VE: v   = x_t / √ᾱ_t = z0 + s ε,  s = σ_t = √((1−ᾱ_t)/ᾱ_t)
The samplers here walk VE levels s (model units: an image-space level σ is s = 2σ) and ask the prior for
Tweedie's E[z0 | z0 + s ε = v] through `prior.denoise` in [0, 1] units, so any prior with a denoiser (a
DiffusionPrior, or an exact Gaussian in tests) drives them, the σ ↔ t map and the range ends (below σ_0,
above σ_{T−1}) are the prior's, and every call counts one NFE.

Measurements stay in the operator's own [0, 1] image units: a data term on the model scale is
f(z) = g(from_model(z)) with the affine map x = (z + 1)/2 applied explicitly, so ∇_z f = ½ ∇_x g. For a
linear A this is the same as working with y' = 2y − A1 = A z + 2n, whose noise level is 2σ_y.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from invlab.errors import ConfigError
from invlab.priors.diffusion import from_model, to_model
from invlab.solvers.common import expand


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like x, drawn on the generator's device (reproducible), moved to x's."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def initial_noise(y: Tensor, A, generator: torch.Generator | None) -> Tensor:
    """x_T ~ N(0, I) shaped like A's images, in y's real dtype (the start of every DDPM/DDIM-type solver)."""
    dtype = y.real.dtype if y.is_complex() else y.dtype
    return randn_like(torch.empty((y.shape[0], *A.in_shape), dtype=dtype, device=y.device), generator)


def denoise_model(prior, z: Tensor, s: float | Tensor) -> Tensor:
    """Tweedie E[z0 | z0 + s ε = z] on the model scale (s in model units) via the [0, 1] protocol."""
    s = torch.as_tensor(s, dtype=z.dtype, device=z.device)
    return to_model(prior.denoise(from_model(z), s / 2))


def data_residual(A, y: Tensor, z: Tensor) -> Tensor:
    """‖y − A(x)‖ per sample with x = from_model(z), in measurement units; (B,)."""
    r = y - A(from_model(z))
    return r.abs().flatten(1).norm(dim=1) if r.is_complex() else r.flatten(1).norm(dim=1)


def likelihood_norm(A, y: Tensor, x: Tensor) -> Tensor:
    """√(2·A.data_fidelity(x, y)) per sample, (B,): ‖y − A(x)‖ for a Gaussian data term, and for an operator
    whose data term is a full negative log-likelihood (1-bit quantisation) the same function of it, so that
    DPS-type gradients ∇‖·‖ follow the likelihood rather than a residual between bits and logits."""
    return (2.0 * A.data_fidelity(x, y)).clamp_min(0).sqrt()


def geometric_levels(top: float, bottom: float, n: int) -> list[float]:
    """n VE levels from `top` down to `bottom` (both included when n ≥ 2), equal ratios; descending."""
    if n <= 1 or bottom >= top:
        return [top]
    return [top * (bottom / top) ** (i / (n - 1)) for i in range(n)]


@torch.no_grad()
def denoising_sampler(prior, v: Tensor, eta: float, *, steps: int = 100, kind: str = "ddpm",
                      generator: torch.Generator | None = None, start_ratio: float = 100.0) -> Tensor:
    """A draw from p(z0 | z0 + η w = v) (model scale, η in model units), using only the prior's denoiser.

    kind="ddpm" (DPnP's DDPMDenoiser): the unconditional reverse process started at v at level η, with
    ancestral (DDPM posterior) steps over `steps` geometric levels from η down to the smallest trained
    level σ_0 (fractional t between trained steps; the variance deficit of a step is ∝ (1 − s'²/s²)², so
    the step count, not the trained grid, sets the accuracy):
        z ← ẑ0 + r (z − ẑ0) + s' √(1 − r) ξ,   r = s'²/s²,  ẑ0 = D(z, s).
    kind="ddim" (DPnP's DDIMDenoiser): the deterministic probability-flow (DDIM) ODE of the *conditional*
    law π(z0) ∝ p(z0) N(v; z0, η²), started from fresh noise z_S = v + √(η² + S²) ξ at S = start_ratio·η.
    Its VE-noised density is π_s(z) ∝ N(z; v, η² + s²) p_τ(m) with τ = ηs/√(η² + s²) and
    m = (s² v + η² z)/(η² + s²) (v and z are two independent noisy views of z0), so its Tweedie
    estimate is exactly E_π[z0 | z_s] = D(m, τ): one unconditional denoiser call per step.
    Step: z ← ẑ0 + (s'/s)(z − ẑ0), over `steps` geometric levels s from S down to σ_0.
    Either way the last step lands on s = 0 and returns ẑ0 there; NFE = number of levels.
    """
    if kind not in ("ddpm", "ddim"):
        raise ConfigError(f"denoiser_sampler must be ddpm or ddim, got {kind!r}.")
    if not eta > 0:
        return v.clone()
    sched = getattr(prior, "schedule", None)  # any denoiser works; a diffusion prior's σ_0 ends the walk
    bottom = min(sched.sigma_min if sched is not None else 0.01, eta / 2)  # model units
    if kind == "ddpm":
        z, levels = v, geometric_levels(eta, bottom, int(steps))
        for i, s in enumerate(levels):
            z0 = denoise_model(prior, z, s)
            s_next = levels[i + 1] if i + 1 < len(levels) else 0.0
            if s_next == 0.0:
                return z0
            r = (s_next / s) ** 2
            z = z0 + r * (z - z0) + s_next * math.sqrt(1.0 - r) * randn_like(v, generator)
        return z  # pragma: no cover - the loop always returns
    top = start_ratio * eta
    levels = geometric_levels(top, bottom, int(steps))
    z = v + math.sqrt(eta**2 + top**2) * randn_like(v, generator)
    for i, s in enumerate(levels):
        tau = eta * s / math.sqrt(eta**2 + s**2)
        m = (s**2 * v + eta**2 * z) / (eta**2 + s**2)
        z0 = denoise_model(prior, m, tau)
        s_next = levels[i + 1] if i + 1 < len(levels) else 0.0
        z = z0 + (s_next / s) * (z - z0)
    return z


def proximal_langevin(z_k: Tensor, y: Tensor, A, sigma_m: Tensor, eta: float, *, iters: int, scale: float,
                      reg: float, generator: torch.Generator | None = None) -> Tensor:
    """DPnP's proximal consistency sampler: an unadjusted Langevin chain for
    π(u) ∝ exp(−L(y; u) − ‖u − z_k‖²/(2η²)) on the model scale, started at z_k, L = ‖y − A(x)‖²/(2σ²) with
    x = (u + 1)/2 and σ = σ_m/2 ((B,), image units). The quadratic coupling is integrated exactly (OU):
        u ← u + a(z_k − u) − η² a ∇L(u) + η √(1 − e^{−2h/η²}) ξ,   a = 1 − e^{−h/η²},
        h = scale · min(σ_m², η²) / (reg + ‖y_m − A_m u‖),   residual in model units (2‖y − A(x)‖).
    Shared by DPnP and PnP-DM's likelihood step for operators without an exact Gaussian step."""
    u, eta2 = z_k.clone(), eta**2
    lik_w = expand(1.0 / (sigma_m / 2.0) ** 2, u)                 # 1/σ² in image units
    cap = expand((sigma_m**2).clamp(max=eta2), u)                # min(σ_m², η²)
    for _ in range(int(iters)):
        x = from_model(u)
        resid_m = 2.0 * data_residual(A, y, u)
        h = scale * cap / (reg + expand(resid_m, u))
        a = -torch.expm1(-h / eta2)
        grad = 0.5 * lik_w * A.grad(x, y)                          # ∇_u L = ½ ∇_x L (x = (u + 1)/2)
        noise = randn_like(u, generator)
        u = u + a * (z_k - u) - eta2 * a * grad + eta * torch.sqrt(-torch.expm1(-2 * h / eta2)) * noise
    return u


def require_diffusion(prior, solver: str) -> None:
    """Solvers that walk the DDPM timesteps need the prior's schedule and ε-network."""
    if prior is None or not hasattr(prior, "schedule") or not hasattr(prior, "eps"):
        name = prior.describe() if hasattr(prior, "describe") else type(prior).__name__
        raise ConfigError(f"solver {solver} needs a diffusion prior (e.g. prior=ddpm_mnist); {name} has no "
                          f"noise schedule or ε-network.")
