"""Distribution-shift KL between two priors from their denoisers (methods.md D; Shoushtari et al. 2025).

For VE smoothing p_σ = p * N(0, σ²I), d/d(σ²) KL(p_σ‖q_σ) = −½ E_{p_σ}‖∇log p_σ − ∇log q_σ‖², and
KL(p_σ‖q_σ) → 0 as σ → ∞, so with scores s(x, σ) = (D(x, σ) − x)/σ²:

    KL(p‖q) = ½ ∫ E_{p_σ}‖s_p − s_q‖² d(σ²) = ∫_0^∞ σ⁻³ E_{x~p, n}‖D_p(x + σn, σ) − D_q(x + σn, σ)‖² dσ.

Clean ("true") estimate: x are images from p. Measurement-domain estimate: x is replaced by ỹ, the
corrupted measurement mapped to image space (inpainting: y + fill·(1−M), i.e. x⊙M + 0.5(1−M) + σ_y n;
MRI and other linear ops: Re Aᴴy), with the same integral; it needs no clean image.
D_p is the in-distribution model, D_q the other one.

Numerics: the σ-integral is a trapezoid rule in log σ (∫σ⁻³v dσ = ∫σ⁻²v dlog σ; on the paper's linear
EDM grid this is the same integral). Only [σ_min, σ_max] is integrated — a learned denoiser is only
valid on the noise levels it was trained on, and the result is then KL(p_σmin‖q_σmin) − KL(p_σmax‖q_σmax).
`tails=True` adds the two end pieces assuming v ∝ σ⁴ below σ_min and v constant above σ_max (both
exact limits for smooth densities): v(σ_end)/(2σ_end²) each. Every image gets one noise draw n per rep,
shared by all σ (a smooth integrand; each σ is still unbiased), so the per-image integrals are i.i.d.
and their standard error is reported. KL is invariant under x ↦ 2x − 1, so [0, 1] vs [-1, 1] units
do not change it (the σ grid scales by 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invlab.analysis.jacobian import denoise
from invlab.errors import ConfigError
from invlab.ops.task import image_domain, make_generator, measured_images  # noqa: F401 (re-exported)

F64 = torch.float64


def sigma_grid(sigma_min: float = 0.002, sigma_max: float = 0.2, n: int = 40, spacing: str = "log") -> Tensor:
    """Ascending noise levels: log-spaced (default) or linear (the paper's EDM ρ=1 grid)."""
    if not 0 < sigma_min < sigma_max or n < 2:
        raise ConfigError(f"need 0 < sigma_min < sigma_max and n ≥ 2; got {sigma_min}, {sigma_max}, {n}.")
    if spacing == "log":
        return torch.logspace(torch.log10(torch.tensor(sigma_min, dtype=F64)),
                              torch.log10(torch.tensor(sigma_max, dtype=F64)), n, dtype=F64)
    if spacing == "linear":
        return torch.linspace(sigma_min, sigma_max, n, dtype=F64)
    raise ConfigError(f"spacing must be log or linear, got {spacing!r}.")


def integrate(sigmas: Tensor, values: Tensor, tails: bool = False) -> Tensor:
    """∫ σ⁻³ v(σ) dσ over the grid for values (..., S)."""
    s = torch.as_tensor(sigmas, dtype=F64)
    v = torch.as_tensor(values, dtype=F64)
    out = torch.trapezoid(v / s**2, s.log(), dim=-1)
    if tails:
        out = out + v[..., 0] / (2 * s[0] ** 2) + v[..., -1] / (2 * s[-1] ** 2)
    return out


@dataclass
class ShiftResult:
    kl: float              # the estimate (mean over images of the per-image integral)
    stderr: float          # its Monte Carlo standard error
    sigmas: list[float]
    integrand: list[float]  # E‖D_p − D_q‖² per σ
    per_image: Tensor      # (N,) per-image integrals


@torch.no_grad()
def shift_kl(prior_p, prior_q, samples: Tensor, sigmas: Tensor, *, reps: int = 1, seed: int = 0,
             batch_size: int = 64, chunk: int | None = 1024, tails: bool = False) -> ShiftResult:
    """KL(p‖q) estimate from `samples` (N, C, H, W): clean images of p, or measured images ỹ."""
    sig = torch.as_tensor(sigmas, dtype=F64).reshape(-1)
    N = samples.shape[0]
    if N < 2:
        raise ConfigError("the KL estimate needs at least 2 images.")
    v = torch.zeros(N, sig.numel(), dtype=F64)
    for start in range(0, N, int(batch_size)):
        x = samples[start:start + int(batch_size)]
        B = x.shape[0]
        noise = torch.stack([torch.randn(x.shape[1:], generator=make_generator(seed, start + b, r), dtype=F64)
                             for b in range(B) for r in range(reps)]).to(device=x.device, dtype=x.dtype)
        xr = x.repeat_interleave(reps, 0)
        for j, s in enumerate(sig.tolist()):
            z = xr + s * noise
            st = torch.full((z.shape[0],), s, dtype=x.dtype, device=x.device)
            diff = denoise(prior_p, z, st, chunk).to(F64) - denoise(prior_q, z, st, chunk).to(F64)
            v[start:start + B, j] = diff.flatten(1).pow(2).sum(1).reshape(B, reps).mean(1).cpu()
    per_image = integrate(sig, v, tails)
    return ShiftResult(kl=float(per_image.mean()), stderr=float(per_image.std() / N**0.5),
                       sigmas=sig.tolist(), integrand=v.mean(0).tolist(), per_image=per_image)


# ---- measurements mapped to image space: invlab.ops.task.image_domain / measured_images -------------


# ---- exact references for Gaussian priors (tests, sanity checks) -------------------------------------
def gaussian_kl(p, q) -> float:
    """KL(N(μp, Σp) ‖ N(μq, Σq)) in closed form (GaussianPrior p, q)."""
    Sp, Sq, dm = p.cov.to(F64), q.cov.to(F64), (q.mean - p.mean).to(F64)
    Lq = torch.linalg.cholesky(Sq)
    quad = torch.cholesky_solve(dm[:, None], Lq)[:, 0] @ dm
    trace = torch.cholesky_solve(Sp, Lq).diagonal().sum()
    logdet = 2 * Lq.diagonal().log().sum() - torch.linalg.slogdet(Sp)[1]
    return float(0.5 * (trace + quad - dm.numel() + logdet))


def gaussian_integrand(p, q, mean: Tensor, cov: Tensor, sigma: float) -> float:
    """E_{z ~ N(mean, cov + σ²I)} ‖D_p(z, σ) − D_q(z, σ)‖² for GaussianPriors p, q (Wiener denoisers
    D(z) = K z + (I − K)μ, K = Σ(Σ + σ²I)⁻¹): ‖B m + a‖² + tr(B (cov + σ²I) Bᵀ)."""
    d = mean.numel()
    eye = torch.eye(d, dtype=F64)
    K = [torch.linalg.solve(g.cov.to(F64) + sigma**2 * eye, g.cov.to(F64)).T for g in (p, q)]  # Σ(Σ+σ²)⁻¹
    B = K[0] - K[1]
    a = (eye - K[0]) @ p.mean.to(F64) - (eye - K[1]) @ q.mean.to(F64)
    m = mean.to(F64).reshape(d)
    C = cov.to(F64) + sigma**2 * eye
    return float((B @ m + a).pow(2).sum() + torch.trace(B @ C @ B.T))
