"""Exact reference models for checking samplers: a linear Gaussian inverse problem whose posterior is closed
form, and ε-networks that are exact for Gaussian and Gaussian-mixture priors (every denoiser call is
Tweedie-exact, so only a sampler's own discretisation and Monte-Carlo error remain).

Used by the sampler tests (tests/test_diffusion_samplers.py, test_gmm_samplers.py, test_pnp_dm_dolph.py, ...)
and by experiments/diffusion/exact.py, which prints the same statistics for every diffusion sampler.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn

from invlab.ops.base import LinearOperator

F64 = torch.float64


class MatrixOp(LinearOperator):
    """A x = M·vec(x) with a dense (m, d) matrix on images of `shape`; prox_l2 and pinv use the base
    class's CG fallbacks. `sigma_y` may be a float or a per-sample tensor."""

    def __init__(self, matrix: torch.Tensor, shape: tuple[int, ...], sigma_y: float | torch.Tensor):
        super().__init__(shape)
        self.register_buffer("matrix", matrix)
        self.noise = SimpleNamespace(sigma=sigma_y)

    def forward(self, x):
        return x.flatten(1) @ self.matrix.T

    def adjoint(self, y):
        return (y @ self.matrix).reshape(-1, *self.in_shape)


class GaussianEps(nn.Module):
    """The exact ε-predictor E[ε | x_t] when images x ∈ [0, 1] are N(μ, Σ), written on the model's own terms:
    z = 2x − 1 ~ N(m, C) with m = 2μ − 1, C = 4Σ; x_t = √ᾱ z + √(1−ᾱ) ε ~ N(√ᾱ m, ᾱ C + (1−ᾱ) I) and
    Cov(ε, x_t) = √(1−ᾱ) I, so E[ε | x_t] = √(1−ᾱ) (ᾱ C + (1−ᾱ) I)⁻¹ (x_t − √ᾱ m)."""

    def __init__(self, prior, schedule):
        super().__init__()
        self.schedule, self.in_channels = schedule, prior.shape[0]
        self.m = 2 * prior.mean - 1
        self.evals, self.evecs = torch.linalg.eigh(4 * prior.cov)
        self.calls = 0

    def forward(self, x_t, t):
        self.calls += 1
        ab = self.schedule.alpha_bar(t).to(F64)[:, None]                       # continuous t: exact ᾱ(t)
        r = x_t.reshape(x_t.shape[0], -1).to(F64) - ab.sqrt() * self.m
        coords = (r @ self.evecs) / (ab * self.evals + 1 - ab)
        return ((1 - ab).sqrt() * coords @ self.evecs.T).reshape(x_t.shape).to(x_t.dtype)


class GaussianMixtureEps(nn.Module):
    """The exact ε-predictor for images x ∈ [0, 1] drawn from a GaussianMixturePrior, through its exact score:
    x_t/√ᾱ = z + s ε with z = 2x − 1 and s = √((1−ᾱ)/ᾱ), i.e. x = (x_t/√ᾱ + 1)/2 = x0 + (s/2) ε in image
    units, and Tweedie gives E[ε | x_t] = −(s/2) ∇log p_{s/2}(x) (the prior's closed-form `score`)."""

    def __init__(self, prior, schedule):
        super().__init__()
        self.prior, self.schedule, self.in_channels = prior, schedule, prior.shape[0]
        self.calls = 0

    def forward(self, x_t, t):
        self.calls += 1
        ab = self.schedule.alpha_bar(t).to(F64).view(-1, *[1] * (x_t.dim() - 1))
        sigma = ((1 - ab) / ab).sqrt() / 2                                    # image-unit noise level
        x = (x_t.to(F64) / ab.sqrt() + 1) / 2
        return (-sigma * self.prior.score(x, sigma.reshape(-1))).to(x_t.dtype)


# ---- sample statistics against an exact Gaussian (the samplers' tests) ------------------------------------

def gaussian_posterior(gp, mat: torch.Tensor, y: torch.Tensor, noise_cov: torch.Tensor):
    """Mean and covariance of x | y for y = A x + n, n ~ N(0, noise_cov) (any noise covariance), prior gp."""
    S, mu = gp.cov, gp.mean.reshape(-1)
    gain = S @ mat.T @ torch.linalg.inv(mat @ S @ mat.T + noise_cov)
    return mu + gain @ (y.reshape(-1) - mat @ mu), S - gain @ mat @ S


def moments(x: torch.Tensor):
    """Sample mean and covariance of a batch of images, flattened, in float64."""
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    return flat.mean(0), torch.cov(flat.T)


def mean_chi2(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> float:
    """N (m − μ)ᵀ C⁻¹ (m − μ) for the sample mean m of N draws: χ² with d degrees of freedom for an exact
    sampler (the CLT), so it catches a bias spread over many coordinates that max |z| would miss."""
    n = x.shape[0]
    m, _ = moments(x)
    d = m - mean
    return float(n * d @ torch.linalg.solve(cov, d))


def stats(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor):
    """(max |z| of the sample mean, trace ratio, relative Frobenius error, its Wishart MC floor)."""
    n = x.shape[0]
    m, c = moments(x)
    z = float(((m - mean) / (cov.diagonal() / n).sqrt()).abs().max())
    floor = math.sqrt((float(cov.trace()) ** 2 + float(cov.norm()) ** 2) / n) / float(cov.norm())
    return z, float(c.trace() / cov.trace()), float((c - cov).norm() / cov.norm()), floor


def linear_gaussian_problem(prior_gen: torch.Generator, data_gen: torch.Generator, shape=(1, 4, 4), m: int = 8,
                            sigma_y: float = 0.05) -> SimpleNamespace:
    """Prior N(μ, Σ) on images of `shape` (d = 16 by default, Σ = 0.02·RRᵀ/d + 0.005·I, μ ≈ 0.5) served as a
    DiffusionPrior with the exact ε-network, y = A x + σ_y n with a dense (m, d) A, and the exact posterior.
    Fields: gp, prior, mat, A, y, post_mean, post_cov, shift (‖posterior mean − prior mean‖)."""
    from invlab.priors.diffusion import DiffusionPrior
    from invlab.priors.gaussian import GaussianPrior
    from invlab.priors.schedule import DDPMSchedule

    d = math.prod(shape)
    root = torch.randn(d, d, generator=prior_gen, dtype=F64)
    cov = 0.02 * root @ root.T / d + 0.005 * torch.eye(d, dtype=F64)
    gp = GaussianPrior((0.5 + 0.1 * torch.randn(d, generator=prior_gen, dtype=F64)).reshape(shape), cov)
    sched = DDPMSchedule()
    prior = DiffusionPrior(net=GaussianEps(gp, sched), schedule=sched, image_size=shape[1:])
    mat = torch.randn(m, d, generator=data_gen, dtype=F64) / math.sqrt(d)
    A = MatrixOp(mat, shape, sigma_y)
    y = A(gp.sample(1, data_gen, dtype=F64)) + sigma_y * torch.randn(1, m, generator=data_gen, dtype=F64)
    post_mean, post_cov = gaussian_posterior(gp, mat, y, sigma_y**2 * torch.eye(m, dtype=F64))
    return SimpleNamespace(gp=gp, prior=prior, mat=mat, A=A, y=y, post_mean=post_mean, post_cov=post_cov,
                           shift=float((post_mean - gp.mean.reshape(-1)).norm()))


# Sampler settings for the exact checks (tests and experiments/diffusion/exact.py). DPnP: the paper code's
# schedule shape (4 at η_max, 12 geometric) down to η_min = 0.05, then 60 iterations at η_min, where the Gibbs
# chain mixes slowly on the d = 16 model (measured, N = 1,000 chains: the mean's χ²₁₆ statistic is 72.8 (DDIM)
# / 48.6 (DDPM) with no settle phase, 37.4 (DDIM) after 30 settle iterations and 19.8 / 17.4 after 60; an
# exact sampler stays below 39.25 with probability 0.999).
DPNP_CHECK = dict(eta_max=0.4, eta_min=0.05, k_start=4, k=12, k_settle=60, pcs_iters=100, pcs_reg=1.0, dds_steps=50,
                  clip=False)
PNP_DM_CHECK = dict(rho_0=1.0, decay=0.8, rho_min=0.05, iters=60, dds_steps=50, pcs_iters=50, pcs_reg=1.0,
                    clip=False)


def smoothed_posterior(p: SimpleNamespace, level_model: float):
    """Mean and covariance of the posterior under the likelihood smoothed by a coupling level on the model
    scale (DPnP's η_min, PnP-DM's ρ_min): noise covariance σ_y²I + (level/2)²AAᵀ in image units."""
    m = p.mat.shape[0]
    return gaussian_posterior(p.gp, p.mat, p.y, float(p.A.noise.sigma) ** 2 * torch.eye(m, dtype=F64)
                              + (level_model / 2) ** 2 * p.mat @ p.mat.T)
