"""Jacobian-free linear algebra on a denoiser's Jacobian J = ∂D/∂x at a noisy image x_σ.

By second-order Tweedie, the posterior covariance is Cov[x | x_σ] = σ² J (symmetric PSD for an exact
MMSE denoiser). Only denoiser calls are used (no autograd), so any prior works, including ones that are
not differentiable, and the k probe directions of every image go through the network in one batch.

Jacobian-vector products are central differences, J v ≈ [D(x + εv̂) − D(x − εv̂)] / (2ε) · ‖v‖ with
v̂ = v/‖v‖. The error is O(ε²·D''') (truncation) plus O(u·‖D‖/ε) (rounding, u the unit roundoff of the
denoiser's dtype); for an affine denoiser (a Gaussian prior) the truncation term is exactly zero.
The step is the Euclidean length of the perturbation, relative to σ: ε = rel_step · σ. The posterior
mean bends on lengths of σ or less (between the modes of a mixture, on ~σ²/‖μ1 − μ2‖), so ε must be
well below σ whatever the image size. The default (rel_step=None) is the textbook central-difference
step ∛u · (length scale) with the scale σ: rel_step = ∛u of the images' dtype, 4.9e-3 in float32 and
6.1e-6 in float64 (u = torch.finfo(dtype).eps). Measured (experiments/eigenscore/README.md): the former
default, a per-pixel RMS step of 0.05σ (ε = 0.05·σ·√d), put the leading eigenvalue of a two-mode
Gaussian mixture (64 pixels, σ = 0.05, points between the modes) off by 54×; on the float32
`dncnn_mnist04` (784 pixels) the error against its exact Jacobian is flat for ε/σ from 0.001 to 0.1
(σ = 0.05, 0.1) and grows to 11% at that former ε/σ = 1.4 (σ = 0.19; experiments/eigenscore/fd_step.py).

The linear algebra runs in float64 whatever the denoiser's dtype.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invlab.errors import ConfigError
from invlab.priors.base import as_sigma

F64 = torch.float64


def denoise(prior, x: Tensor, sigma: Tensor, chunk: int | None = None) -> Tensor:
    """prior.denoise on a batch, in pieces of at most `chunk` images (sigma is (B,))."""
    if chunk is None or x.shape[0] <= chunk:
        return prior.denoise(x, sigma)
    return torch.cat([prior.denoise(x[i:i + chunk], sigma[i:i + chunk]) for i in range(0, x.shape[0], chunk)])


def default_rel_step(dtype: torch.dtype) -> float:
    """∛u of the images' dtype: the central-difference step in units of σ (module docstring)."""
    return float(torch.finfo(dtype).eps) ** (1 / 3)


def fd_step(sigma: Tensor, rel: float | None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The absolute central-difference step ε = rel·σ per sample, (N,); rel None: `default_rel_step`."""
    rel = default_rel_step(dtype) if rel is None else float(rel)
    if not rel > 0:
        raise ConfigError(f"the finite-difference step (detector.fd_step, in units of σ) must be positive "
                          f"or null (automatic), got {rel}.")
    return rel * sigma.to(F64)


def jvp(prior, x: Tensor, sigma: Tensor, V: Tensor, rel_step: float | None = None,
        chunk: int | None = None) -> Tensor:
    """J V by central differences for N images at once.

    x: (N, C, H, W) noisy images; sigma: (N,); V: (N, d, k) directions (any norms, float64);
    rel_step: ε/σ (None: ∛u of x's dtype). Returns (N, d, k) float64. Costs one denoiser call on a
    batch of 2·N·k images.
    """
    N, d, k = V.shape
    shape = x.shape[1:]
    V = V.to(F64)
    norms = V.norm(dim=1).clamp_min(torch.finfo(F64).tiny)           # (N, k)
    eps = fd_step(sigma.detach().to(device=V.device), rel_step, x.dtype)   # (N,)
    step = (V / norms[:, None, :]) * eps[:, None, None]              # (N, d, k)
    step = step.transpose(1, 2).reshape(N, k, *shape).to(device=x.device, dtype=x.dtype)
    plus = (x[:, None] + step).reshape(N * k, *shape)
    minus = (x[:, None] - step).reshape(N * k, *shape)
    s = sigma.to(device=x.device, dtype=x.dtype).repeat_interleave(k)
    out = denoise(prior, torch.cat([plus, minus]), torch.cat([s, s]), chunk)
    diff = (out[:N * k] - out[N * k:]).reshape(N, k, d).to(device=V.device, dtype=F64)
    return (diff / (2 * eps[:, None, None])).transpose(1, 2) * norms[:, None, :]


def orthonormalize(W: Tensor) -> Tensor:
    """Q of the QR decomposition with diag(R) ≥ 0 (a sign convention, so Q is unique and continuous)."""
    Q, R = torch.linalg.qr(W)
    signs = torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))
    return Q * torch.where(signs == 0, torch.ones_like(signs), signs)[..., None, :]


@dataclass
class Eigen:
    """Leading eigenpairs of σ²J per sample."""

    values: Tensor      # (N, k) eigenvalues of the posterior covariance σ²J, descending
    vectors: Tensor     # (N, d, k) orthonormal Ritz vectors
    iterations: Tensor  # (N,) iterations run
    converged: Tensor   # (N,) bool
    residual: Tensor    # (N,) max_j ‖J v_j − θ_j v_j‖ / θ_1 at the end (finite-difference error included):
    #                     each θ_j is within ‖r_j‖ of an eigenvalue of a symmetric J, though not necessarily
    #                     of λ_j while the subspace still misses a top eigenvector


def posterior_cov_eigs(prior, x: Tensor, sigma: float | Tensor, k: int = 3, *, oversample: int = 0,
                       V0: Tensor | None = None, max_iters: int = 50, tol: float = 1e-3, patience: int = 3,
                       rel_step: float | None = None, chunk: int | None = None,
                       generator: torch.Generator | None = None) -> Eigen:
    """Top-k eigenvalues of Cov[x | x_σ] = σ²·∂D/∂x at each noisy image x (N, C, H, W).

    Subspace iteration with Rayleigh–Ritz on m = k + oversample vectors: W = J V (central differences),
    H = sym(Vᵀ W), θ, U = eig(H), V ← QR(W U). A sample has converged when max_{j≤k} |θ_j − θ_j'| ≤ tol·|θ_1|
    held for `patience` consecutive iterations; converged samples leave the active batch (no more
    denoiser calls). Ritz values converge like (λ_{m+1}/λ_j)^{2i} after i iterations — twice as fast as
    the norms ‖J v_j‖ the paper's code uses, which they equal at convergence for a symmetric J; guard
    vectors (oversample > 0) help when λ_k ≈ λ_{k+1}, as at small σ where the top of σ²J crowds at σ².
    A small change per iteration is not a small error when convergence is slow; `residual` is a second
    diagnostic. For a learned denoiser whose Jacobian is not exactly symmetric, the Ritz values are
    the eigenvalues of its symmetric part on the subspace.
    """
    N = x.shape[0]
    d = x[0].numel()
    m = k + int(oversample)
    sig = as_sigma(sigma, x).to(device="cpu", dtype=F64)
    if V0 is None:
        V0 = torch.randn(N, d, m, dtype=F64, generator=generator)
    if V0.shape != (N, d, m):
        raise ValueError(f"V0 must have shape {(N, d, m)} (k + oversample columns), got {tuple(V0.shape)}.")
    V = orthonormalize(V0.to(F64))
    ritz = V.clone()
    theta = torch.zeros(N, k, dtype=F64)
    residual = torch.full((N,), float("inf"), dtype=F64)
    prev = torch.full((N, k), float("nan"), dtype=F64)
    streak = torch.zeros(N, dtype=torch.long)
    iterations = torch.zeros(N, dtype=torch.long)
    active = torch.arange(N)
    tiny = torch.finfo(F64).tiny
    for _ in range(max_iters):
        if active.numel() == 0:
            break
        Va = V[active]
        W = jvp(prior, x[active], sig[active], Va, rel_step, chunk)
        H = Va.transpose(1, 2) @ W
        vals, U = torch.linalg.eigh(0.5 * (H + H.transpose(1, 2)))
        vals, U = vals.flip(-1), U.flip(-1)                              # descending
        WU, VU = W @ U, Va @ U
        scale = vals[:, :1].abs().clamp_min(tiny)
        residual[active] = ((WU - VU * vals[:, None, :])[..., :k].norm(dim=1) / scale).amax(-1)
        ritz[active] = VU
        V[active] = orthonormalize(WU)
        theta[active] = vals[:, :k]
        iterations[active] += 1
        change = (vals[:, :k] - prev[active]).abs().amax(-1)
        ok = change <= tol * scale[:, 0]
        streak[active] = torch.where(ok, streak[active] + 1, torch.zeros_like(streak[active]))
        prev[active] = vals[:, :k]
        active = active[streak[active] < patience]
    return Eigen(values=theta * sig[:, None] ** 2, vectors=ritz[..., :k], iterations=iterations,
                 converged=streak >= patience, residual=residual)
