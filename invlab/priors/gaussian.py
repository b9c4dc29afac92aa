"""Exact analytic priors: Gaussian and Gaussian mixture on small images (flattened dimension d).

For p = Σ_k w_k N(μ_k, Σ_k) and x_σ = x + σn, everything a solver or sampler may ask is closed form:
    p_σ      = Σ_k w_k N(μ_k, Σ_k + σ²I)
    D(x, σ)  = E[x | x_σ] = Σ_k π_k(x) [μ_k + Σ_k(Σ_k + σ²I)⁻¹(x − μ_k)],  π_k ∝ w_k N(x; μ_k, Σ_k + σ²I)
    score    = ∇log p_σ(x) = −Σ_k π_k(x)(Σ_k + σ²I)⁻¹(x − μ_k)
and for y = Ax + σ_y n the posterior is again a mixture (`posterior`). For one Gaussian, D_σ is also the
prox of σ²·(−log p), which is what makes PnP fixed points checkable against the MAP.
Tests use these to prove that a solver or sampler targets the right distribution, so they compute in
float64 through each component's eigendecomposition (any σ per sample costs no new factorisation) and
cast back to the input dtype. Covariances may be singular when σ > 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from invlab.errors import ShapeError
from invlab.priors.base import Prior, as_sigma

F64 = torch.float64


@dataclass
class MixturePosterior:
    """p(x | y) = Σ_k weights[b, k] N(means[b, k], covs[k]) per sample b, on flattened images."""

    weights: Tensor  # (B, K)
    means: Tensor    # (B, K, d)
    covs: Tensor     # (K, d, d)

    @property
    def mean(self) -> Tensor:
        """Posterior mean E[x | y], (B, d)."""
        return torch.einsum("bk,bkd->bd", self.weights, self.means)

    @property
    def cov(self) -> Tensor:
        """Posterior covariance Cov[x | y], (B, d, d): within- plus between-component spread."""
        dev = self.means - self.mean[:, None]
        within = torch.einsum("bk,kde->bde", self.weights, self.covs)
        return within + torch.einsum("bk,bkd,bke->bde", self.weights, dev, dev)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n exact posterior draws per sample, (B, n, d)."""
        B, K, d = self.means.shape
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (B, n)
        evals, evecs = torch.linalg.eigh(self.covs)
        root = evecs * evals.clamp_min(0).sqrt()[:, None, :]  # (K, d, d): root rootᵀ = cov
        z = torch.randn((B, n, d), generator=generator, dtype=self.means.dtype, device=self.means.device)
        every = torch.einsum("kde,bne->bnkd", root, z)  # each draw's noise under every component
        pick = comp[..., None, None].expand(B, n, 1, d)
        noise = torch.gather(every, 2, pick)[:, :, 0]
        return torch.gather(self.means, 1, comp[..., None].expand(B, n, d)) + noise


class GaussianMixturePrior(Prior):
    """p(x) = Σ_k w_k N(μ_k, Σ_k) on images of `shape` (C, H, W); means (K, d) or (K, C, H, W)."""

    differentiable = True

    def __init__(self, weights, means, covs, shape: tuple[int, ...] | None = None):
        super().__init__()
        means = torch.as_tensor(means, dtype=F64)
        covs = torch.as_tensor(covs, dtype=F64)
        if shape is None:
            shape = tuple(means.shape[1:]) if means.dim() == 4 else (1, 1, means.shape[-1])
        self.shape = tuple(int(s) for s in shape)
        d = math.prod(self.shape)
        means = means.reshape(-1, d)
        weights = torch.as_tensor(weights, dtype=F64).reshape(-1)
        if covs.shape != (means.shape[0], d, d) or weights.shape[0] != means.shape[0]:
            raise ShapeError(f"a mixture of {means.shape[0]} components on {d} pixels needs weights "
                             f"({means.shape[0]},) and covs ({means.shape[0]}, {d}, {d}); got "
                             f"{tuple(weights.shape)} and {tuple(covs.shape)}.")
        covs = 0.5 * (covs + covs.transpose(1, 2))
        evals, evecs = torch.linalg.eigh(covs)
        self.channels = self.shape[0]
        self.register_buffer("weights", weights / weights.sum())
        self.register_buffer("means", means)
        self.register_buffer("covs", covs)
        self.register_buffer("evals", evals.clamp_min(0.0))
        self.register_buffer("evecs", evecs)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def describe(self) -> str:
        return f"{type(self).__name__}(K={self.means.shape[0]}, shape={self.shape})"

    def check_input(self, x: Tensor) -> None:
        super().check_input(x)
        if tuple(x.shape[1:]) != self.shape:
            raise ShapeError(f"{self.describe()} models images of shape {self.shape} but got {tuple(x.shape[1:])}.")

    # ---- the closed forms, per component in its eigenbasis ---------------------------------------
    def _components(self, x: Tensor, sigma: Tensor):
        """Posterior component weights π (B, K), eigen-coordinates of x − μ_k (B, K, d), Λ_k + σ² (B, K, d)."""
        xf = x.reshape(x.shape[0], -1).to(F64)
        coords = torch.einsum("bkd,kde->bke", xf[:, None] - self.means[None], self.evecs)
        var = self.evals[None] + sigma.to(F64).pow(2)[:, None, None]
        log_normal = -0.5 * ((coords**2 / var).sum(-1) + var.log().sum(-1) + self.dim * math.log(2 * math.pi))
        log_joint = self.weights.log()[None] + log_normal
        return log_joint, coords, var

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        log_joint, coords, var = self._components(x, sigma)
        gain = torch.where(var > 0, self.evals[None] / var, torch.ones_like(var))
        shrunk = self.means[None] + torch.einsum("bke,kde->bkd", gain * coords, self.evecs)
        out = torch.einsum("bk,bkd->bd", log_joint.softmax(-1), shrunk)
        return out.reshape(x.shape).to(x.dtype)

    def score(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """∇log p_σ(x), exact (not through Tweedie, so no cancellation at small σ). Counts one NFE."""
        self.check_input(x)
        with self.stats.call(x):
            log_joint, coords, var = self._components(x, as_sigma(sigma, x))
            per_comp = -torch.einsum("bke,kde->bkd", coords / var, self.evecs)
            return torch.einsum("bk,bkd->bd", log_joint.softmax(-1), per_comp).reshape(x.shape).to(x.dtype)

    def log_density(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        """log p_σ(x) per sample, (B,), in float64."""
        return self._components(x, as_sigma(sigma, x))[0].logsumexp(-1)

    def sample(self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """n exact prior draws, (n, C, H, W)."""
        post = MixturePosterior(self.weights.expand(1, -1), self.means[None], self.covs)
        return post.sample(n, generator)[0].reshape(n, *self.shape).to(dtype)

    def posterior(self, A: Tensor, y: Tensor, sigma_y: float) -> MixturePosterior:
        """Exact p(x | y) for y = A x + σ_y n, with A an (m, d) matrix and y of shape (B, m)."""
        A = torch.as_tensor(A, dtype=F64, device=self.means.device)
        y = torch.as_tensor(y, dtype=F64, device=self.means.device).reshape(-1, A.shape[0])
        cov_a = self.covs @ A.T                                           # Σ_k Aᵀ (K, d, m)
        S = A @ cov_a + sigma_y**2 * torch.eye(A.shape[0], dtype=F64, device=A.device)  # (K, m, m)
        gain = torch.linalg.solve(S, cov_a.transpose(1, 2)).transpose(1, 2)  # Σ_k Aᵀ S_k⁻¹ (K, d, m)
        resid = y[:, None] - self.means @ A.T                              # (B, K, m)
        means = self.means[None] + torch.einsum("kdm,bkm->bkd", gain, resid)
        covs = self.covs - gain @ cov_a.transpose(1, 2)
        covs = 0.5 * (covs + covs.transpose(1, 2))
        chol = torch.linalg.cholesky(S)
        white = torch.linalg.solve_triangular(chol[None], resid[..., None], upper=False)[..., 0]
        log_ev = -0.5 * white.pow(2).sum(-1) - chol.diagonal(dim1=1, dim2=2).log().sum(-1) \
            - 0.5 * A.shape[0] * math.log(2 * math.pi)
        weights = (self.weights.log()[None] + log_ev).softmax(-1)
        return MixturePosterior(weights, means, covs)


class GaussianPrior(GaussianMixturePrior):
    """p(x) = N(mean, cov); mean may be a scalar (constant image) and cov a scalar (isotropic variance)."""

    def __init__(self, mean, cov, shape: tuple[int, ...] | None = None):
        mean, cov = torch.as_tensor(mean, dtype=F64), torch.as_tensor(cov, dtype=F64)
        if shape is None:
            if mean.dim() not in (1, 3):
                raise ShapeError("GaussianPrior needs `shape` (C, H, W) when the mean is a scalar.")
            shape = tuple(mean.shape) if mean.dim() == 3 else (1, 1, mean.numel())
        shape = tuple(int(s) for s in shape)
        d = math.prod(shape)
        mean = mean.expand(d) if mean.dim() == 0 else mean.reshape(d)
        cov = cov * torch.eye(d, dtype=F64) if cov.dim() == 0 else cov
        super().__init__([1.0], mean[None], cov[None], shape)

    @property
    def mean(self) -> Tensor:
        return self.means[0]

    @property
    def cov(self) -> Tensor:
        return self.covs[0]


def stationary_gaussian(shape, mean: float = 0.5, std: float = 0.2, length: float = 2.0) -> GaussianPrior:
    """A smooth-image Gaussian prior: channels independent, squared-exponential correlation of `length` px."""
    C, H, W = (int(s) for s in shape)
    yy, xx = torch.meshgrid(torch.arange(H, dtype=F64), torch.arange(W, dtype=F64), indexing="ij")
    pos = torch.stack((yy.flatten(), xx.flatten()), 1)
    corr = torch.exp(-0.5 * torch.cdist(pos, pos).pow(2) / length**2)
    cov = std**2 * (torch.block_diag(*[corr] * C) + 1e-6 * torch.eye(C * H * W, dtype=F64))
    return GaussianPrior(mean, cov, (C, H, W))
