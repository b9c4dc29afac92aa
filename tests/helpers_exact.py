"""Exact test doubles shared by the solver, analytic-prior and diffusion-sampler tests."""
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


def stats(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor):
    """(max |z| of the sample mean, trace ratio, relative Frobenius error, its Wishart MC floor)."""
    n = x.shape[0]
    m, c = moments(x)
    z = float(((m - mean) / (cov.diagonal() / n).sqrt()).abs().max())
    floor = math.sqrt((float(cov.trace()) ** 2 + float(cov.norm()) ** 2) / n) / float(cov.norm())
    return z, float(c.trace() / cov.trace()), float((c - cov).norm() / cov.norm()), floor
