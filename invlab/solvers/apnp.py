"""Analysis PnP (APnP, methods.md B): the prior is a denoiser of the image gradient z = Dx, not of x.

    min_x ½‖y − Ax‖² + h(Dx),   D = circular finite differences (invlab.ops.gradient), G_σ ≈ prox of h

One loop, two splittings (`splitting`), starting from x₀ = A's baseline and u = 0:

    z_k = G_{σ_k}(Dx_k + u_k)                                        prior step on 2C gradient channels
    x_{k+1} = argmin_x ½‖Ax − y‖² + μ_k/2‖Dx − z_k + u_k‖²
            = (AᵀA + μ_k DᵀD)⁻¹ (Aᵀy + μ_k Dᵀ(z_k − u_k))            data step
    u_{k+1} = u_k + Dx_{k+1} − z_k          (admm; hqs keeps u = 0)

The data step is exact: one FFT division for a circular blur (DᵀD and AᵀA are both diagonal in the
Fourier basis); for super-resolution A = S H (decimated circular blur) the system decouples into s²×s²
blocks of aliased frequencies, diag(μ|d|²) + k̄kᵀ/s², solved directly; any other linear operator uses
warm-started conjugate gradients on the normal equations.

Schedule (DPIR's, as in pnp_hqs): σ_k decreases log-uniformly from sigma_max to max(σ_y, sigma_min) over
`anneal_iters` iterations (default: all), then stays; μ_k = λ·max(σ_y, sigma_y_floor)²/σ_k², so the prior
weight of the MMSE reading of G (prox of σ²·(−log p)) is σ_k²μ_k = λσ_y² at every k. With
anneal_iters = 1 the σ and μ are fixed: then ADMM with G = soft-thresholding at wσ (the prox of wσ‖·‖₁)
converges to anisotropic TV, argmin ½‖Ax − y‖² + μwσ‖Dx‖₁. When μ changes, the scaled dual u is
rescaled by μ_{k−1}/μ_k (Boyd et al. 2011, §3.4.1), as in pnp_admm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from invlab.errors import ConfigError
from invlab.ops.base import conjugate_gradient
from invlab.ops.blur import Blur
from invlab.ops.gradient import grad, grad_adjoint, gram, gram_symbol
from invlab.ops.resample import SuperResolution
from invlab.solvers.base import Solver, Trace
from invlab.solvers.common import (SIGMA_FLOOR, check_positive, expand, initial_iterate, relative_change,
                                   sigma_y_per_sample)

SPLITTINGS = ("hqs", "admm")


def solve_x(A, rhs: Tensor, mu: Tensor, x0: Tensor | None = None, cg_iters: int = 100,
            cg_tol: float = 1e-6) -> Tensor:
    """(AᵀA + μDᵀD)⁻¹ rhs per sample (μ of shape (B,)): by FFT for Blur and SuperResolution, else CG from x0."""
    h, w = rhs.shape[-2:]
    mu = expand(mu, rhs)
    if isinstance(A, Blur):
        k = A.otf(rhs.dtype)
        lap = gram_symbol(h, w, rhs.dtype, rhs.device, onesided=True)
        return torch.fft.irfft2(torch.fft.rfft2(rhs) / (k.abs() ** 2 + mu * lap), s=(h, w))
    if isinstance(A, SuperResolution):
        return _solve_sr(A, rhs, mu)
    apply = lambda v: A.normal(v) + mu * gram(v)  # noqa: E731
    return conjugate_gradient(apply, rhs, x0=x0, iters=cg_iters, tol=cg_tol)


def _groups(spec: Tensor, s: int) -> Tensor:
    """(..., H, W) full spectrum → (..., H/s, W/s, s²): the s² frequencies that alias onto each
    low-resolution frequency (the tiles `invlab.ops.resample.tile_mean` averages)."""
    h, w = spec.shape[-2:]
    t = spec.reshape(*spec.shape[:-2], s, h // s, s, w // s)            # (..., a, h/s, b, w/s)
    n = t.dim()
    return t.permute(*range(n - 4), n - 3, n - 1, n - 4, n - 2).flatten(-2)  # (..., h/s, w/s, a·s + b)


def _ungroup(groups: Tensor, s: int) -> Tensor:
    hs, ws = groups.shape[-3:-1]
    t = groups.unflatten(-1, (s, s))                                    # (..., h/s, w/s, a, b)
    n = t.dim()
    return t.permute(*range(n - 4), n - 2, n - 4, n - 1, n - 3).reshape(*groups.shape[:-3], s * hs, s * ws)


def _solve_sr(A: SuperResolution, rhs: Tensor, mu: Tensor) -> Tensor:
    """Exact (HᵀSᵀSH + μDᵀD)⁻¹ for A = S H: per low-resolution frequency, the s²×s² Hermitian system
    diag(μ|d_i|²) + k̄_i k_j / s² (decimation averages the aliased copies, zero-upsampling tiles them)."""
    s = A.scale
    h, w = rhs.shape[-2:]
    k = _groups(A.otf(rhs.dtype), s)                                               # (B|1, C|1, h', w', s²)
    lap = _groups(gram_symbol(h, w, rhs.dtype, rhs.device), s)                     # (h', w', s²)
    system = torch.diag_embed((mu[..., None] * lap).to(k.dtype)) + k.conj()[..., :, None] * k[..., None, :] / s**2
    r = _groups(torch.fft.fft2(rhs), s)[..., None]                                 # (B, C, h', w', s², 1)
    return torch.fft.ifft2(_ungroup(torch.linalg.solve(system, r)[..., 0], s)).real


@dataclass
class APnP(Solver):
    needs = ("adjoint",)

    splitting: str = "hqs"                    # hqs | admm
    iters: int = 8
    sigma_max: float = 49.0 / 255.0           # first denoiser level (on the gradient)
    sigma_min: float = SIGMA_FLOOR            # last level is max(σ_y, sigma_min)
    anneal_iters: int | None = None           # σ reaches its last level at this iteration (None: iters)
    lam: float = 0.23                         # μ_k = λ·σ_y²/σ_k²
    sigma_y_floor: float = SIGMA_FLOOR        # σ_y used in μ_k is at least this (noiseless tasks)
    cg_iters: int = 100                       # CG data step (operators without an FFT solve)
    cg_tol: float = 1e-6

    def schedule(self, sigma_y: Tensor) -> tuple[Tensor, Tensor]:
        """Per-iteration, per-sample (σ_k, μ_k), each of shape (iters, B)."""
        check_positive(sigma_max=self.sigma_max, sigma_min=self.sigma_min, lam=self.lam,
                       sigma_y_floor=self.sigma_y_floor, iters=self.iters)
        n = self.iters if self.anneal_iters is None else int(self.anneal_iters)
        check_positive(anneal_iters=n)
        k = torch.arange(self.iters, dtype=sigma_y.dtype, device=sigma_y.device)
        steps = (k / (n - 1)).clamp(max=1.0) if n > 1 else torch.ones_like(k)
        first = torch.full_like(sigma_y, math.log(self.sigma_max))
        last = sigma_y.clamp_min(self.sigma_min).log()
        sigmas = torch.exp(first + steps[:, None] * (last - first))
        mus = self.lam * sigma_y.clamp_min(self.sigma_y_floor) ** 2 / sigmas**2
        return sigmas, mus

    def check_prior(self, prior, x: Tensor) -> None:
        """Raise a ConfigError unless the prior takes the 2C-channel gradients of these C-channel images
        (`run.py` calls this instead of checking the prior against the images themselves)."""
        if self.splitting not in SPLITTINGS:
            raise ConfigError(f"solver.splitting={self.splitting!r} must be one of {', '.join(SPLITTINGS)}.")
        want = 2 * x.shape[1]
        if getattr(prior, "channels", None) not in (None, want):
            raise ConfigError(
                f"APnP denoises image gradients, {want} channels for {x.shape[1]}-channel images (horizontal and "
                f"vertical differences), but the prior {prior.describe()} takes {prior.channels}-channel inputs; "
                f"use a gradient-domain prior such as prior=dncnn_grad.")
        if hasattr(prior, "check_input"):
            prior.check_input(grad(x[:1]))

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:
        x = initial_iterate(y, A, x_init)
        self.check_prior(prior, x)
        sigmas, mus = self.schedule(sigma_y_per_sample(A, x))
        aty = A.adjoint(y)
        u = torch.zeros_like(grad(x))
        for k in range(self.iters):
            if k > 0 and self.splitting == "admm":
                u = u * expand(mus[k - 1] / mus[k], u)  # scaled dual for the new μ
            z = prior.denoise(grad(x) + u, sigmas[k])
            x_prev = x
            x = solve_x(A, aty + expand(mus[k], x) * grad_adjoint(z - u), mus[k], x, self.cg_iters, self.cg_tol)
            if self.splitting == "admm":
                u = u + grad(x) - z
            trace(k, x, residual=relative_change(x, x_prev))
        return x
