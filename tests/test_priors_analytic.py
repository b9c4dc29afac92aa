"""TV denoiser against its optimality and scikit-image; Gaussian / Gaussian-mixture priors against
independent computations (numpy linear algebra, grid integration, Monte Carlo)."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy.stats import multivariate_normal
from skimage import data
from skimage.restoration import denoise_tv_chambolle

from invlab.errors import ShapeError
from invlab.priors.gaussian import GaussianMixturePrior, GaussianPrior
from invlab.priors.tv import TVPrior, finite_diff, finite_diff_adjoint, tv_norm, tv_prox
from invlab.utils.config import build

CONF = pathlib.Path(__file__).resolve().parents[1] / "conf"
F64 = torch.float64


def noisy_crop(size=32, sigma=0.1, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    img = data.astronaut()[100:100 + size, 200:200 + size] / 255.0  # (H, W, 3)
    img = img[..., :channels].transpose(2, 0, 1)
    return torch.tensor(img + sigma * rng.standard_normal(img.shape), dtype=F64)[None]


# ---- total variation ------------------------------------------------------------------------------
def tv_objective(u, x, lam):
    return 0.5 * ((u - x) ** 2).flatten(1).sum(1) + lam * tv_norm(u)


def test_finite_difference_adjoint():
    g = torch.Generator().manual_seed(0)
    u, q = torch.randn(2, 3, 7, 9, generator=g, dtype=F64), torch.randn(2, 3, 2, 7, 9, generator=g, dtype=F64)
    assert torch.allclose((finite_diff(u) * q).sum(), (u * finite_diff_adjoint(q)).sum())


def test_tv_prox_is_optimal_and_matches_skimage():
    x, lam = noisy_crop(), 0.08
    u, q = tv_prox(x, lam, iters=300, return_dual=True)
    # duality gap: primal ½‖u−x‖² + λTV(u) minus dual ½‖x‖² − ½‖x − λ∇ᵀq‖² (feasible: |q| ≤ 1)
    assert float(q.pow(2).sum(2).sqrt().max()) <= 1 + 1e-12
    dual = 0.5 * (x**2).sum() - 0.5 * ((x - lam * finite_diff_adjoint(q)) ** 2).sum()
    primal = tv_objective(u, x, lam)
    assert float(primal - dual) < 1e-4 * float(primal)
    # skimage's `weight` is the same λ on the same discretisation (forward differences, Neumann)
    ref = torch.tensor(denoise_tv_chambolle(x[0, 0].numpy(), weight=lam, eps=1e-9, max_num_iter=3000))
    assert float((u[0, 0] - ref).abs().max()) < 5e-3
    assert float(primal) <= float(tv_objective(ref[None, None], x, lam)) * (1 + 1e-5)
    assert float(primal) < float(tv_objective(x, x, lam))  # and it beats doing nothing


def test_tv_color_is_per_channel_like_skimage():
    x, lam = noisy_crop(size=24, channels=3), 0.05
    u = tv_prox(x, lam, iters=300)
    ref = denoise_tv_chambolle(x[0].numpy(), weight=lam, eps=1e-9, max_num_iter=3000, channel_axis=0)
    assert float((u[0] - torch.tensor(ref)).abs().max()) < 5e-3


def test_tv_prior_strength_scales_with_sigma():
    x = torch.cat([noisy_crop(size=16, seed=s) for s in range(3)]).float()
    prior, sigma = TVPrior(weight=0.7, iters=80), torch.tensor([0.0, 0.05, 0.2])
    out = prior.denoise(x, sigma)
    assert prior.stats.nfe == 1
    assert torch.equal(out[0], x[0])  # σ = 0: identity
    for b in (1, 2):
        assert torch.allclose(out[b:b + 1], tv_prox(x[b:b + 1], 0.7 * float(sigma[b]), 80), atol=1e-6)
    # λ ∝ σ makes D equivariant to joint scaling of image and noise: D(cx, cσ) = c·D(x, σ)
    assert torch.allclose(prior.denoise(3 * x, 3 * sigma), 3 * out, atol=1e-5)


# ---- Gaussian -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gaussian():
    g = torch.Generator().manual_seed(1)
    d = 6
    root = torch.randn(d, d, generator=g, dtype=F64)
    cov = root @ root.T / d + 0.05 * torch.eye(d, dtype=F64)
    mean = torch.rand(d, generator=g, dtype=F64)
    return GaussianPrior(mean.reshape(1, 2, 3), cov), mean.numpy(), cov.numpy()


def test_gaussian_denoiser_score_and_density(gaussian):
    prior, mu, S = gaussian
    x = torch.rand(4, 1, 2, 3, dtype=F64)
    sigma = torch.tensor([0.05, 0.1, 0.3, 1.0], dtype=F64)
    den, score, logp = prior.denoise(x, sigma), prior.score(x, sigma), prior.log_density(x, sigma)
    assert prior.stats.nfe == 2
    for b in range(4):
        xb, s2 = x[b].flatten().numpy(), float(sigma[b]) ** 2
        Sy = S + s2 * np.eye(6)
        assert np.allclose(den[b].flatten().numpy(), mu + S @ np.linalg.solve(Sy, xb - mu), atol=1e-10)
        assert np.allclose(score[b].flatten().numpy(), -np.linalg.solve(Sy, xb - mu), atol=1e-10)
        assert np.isclose(float(logp[b]), multivariate_normal(mu, Sy).logpdf(xb))
        # D_σ is the prox of σ²·(−log p): (D − x)/σ² + Σ⁻¹(D − μ) = 0
        d = den[b].flatten().numpy()
        assert np.allclose((d - xb) / s2 + np.linalg.solve(S, d - mu), 0, atol=1e-8)
    assert torch.allclose(score, (den - x) / sigma.view(-1, 1, 1, 1) ** 2, atol=1e-8)  # Tweedie


def test_gaussian_posterior_and_samples(gaussian):
    prior, mu, S = gaussian
    g = torch.Generator().manual_seed(2)
    A, sigma_y = torch.randn(4, 6, generator=g, dtype=F64), 0.1
    y = torch.randn(3, 4, generator=g, dtype=F64)
    post = prior.posterior(A, y, sigma_y)
    An, P = A.numpy(), np.linalg.inv(S)
    cov = np.linalg.inv(P + An.T @ An / sigma_y**2)
    mean = (cov @ (P @ mu[:, None] + An.T @ y.numpy().T / sigma_y**2)).T
    assert np.allclose(post.mean.numpy(), mean, atol=1e-10)
    assert np.allclose(post.cov.numpy(), cov[None], atol=1e-10)
    assert_moments(prior.sample(40000, g, dtype=F64).reshape(-1, 6).numpy(), mu, S)
    assert_moments(post.sample(40000, g)[1].numpy(), mean[1], cov)


def assert_moments(draws, mean, cov, z=5.0):
    """Sample mean and covariance within z standard errors of the exact ones (Gaussian draws)."""
    n, var = draws.shape[0], np.diag(cov)
    assert np.all(np.abs(draws.mean(0) - mean) < z * np.sqrt(var / n))
    assert np.all(np.abs(np.cov(draws.T) - cov) < z * np.sqrt((np.outer(var, var) + cov**2) / n))


def test_gaussian_checks_shapes(gaussian):
    with pytest.raises(ShapeError):
        gaussian[0].denoise(torch.rand(2, 1, 3, 2), 0.1)
    with pytest.raises(ShapeError):
        GaussianPrior(0.5, 0.1)  # a scalar mean needs a shape
    iso = GaussianPrior(0.5, 0.04, shape=(1, 2, 2))
    assert torch.allclose(iso.denoise(torch.ones(1, 1, 2, 2), 0.2), torch.full((1, 1, 2, 2), 0.75))


# ---- Gaussian mixture -----------------------------------------------------------------------------
def grid_expectation(log_w, points, f):
    """Σ f(x) w(x) / Σ w(x) over grid points with log-weights log_w."""
    w = np.exp(log_w - log_w.max())
    return (w[:, None] * f).sum(0) / w.sum()


def test_mixture_1d_against_numerical_integration():
    prior = GaussianMixturePrior([0.2, 0.5, 0.3], [[-1.0], [0.3], [1.5]], [[[0.05]], [[0.2]], [[0.02]]])
    grid = np.linspace(-4, 5, 20001)
    log_prior = np.log(sum(w * np.exp(-0.5 * (grid - m) ** 2 / v) / np.sqrt(2 * np.pi * v)
                           for w, m, v in [(0.2, -1.0, 0.05), (0.5, 0.3, 0.2), (0.3, 1.5, 0.02)]))
    xs = torch.tensor([-1.2, 0.0, 0.9, 2.0], dtype=F64).reshape(4, 1, 1, 1)
    for sigma in (0.1, 0.5):
        den, score = prior.denoise(xs, sigma), prior.score(xs, sigma)
        for b, v in enumerate(xs.flatten().tolist()):
            log_joint = log_prior - 0.5 * (v - grid) ** 2 / sigma**2
            assert np.isclose(float(den[b]), grid_expectation(log_joint, grid, grid[:, None])[0], atol=1e-6)
            # score = d/dv log p_σ(v), by central differences of the exact log density
            h = 1e-5
            lp = prior.log_density(torch.tensor([v - h, v + h], dtype=F64).reshape(2, 1, 1, 1), sigma)
            assert np.isclose(float(score[b]), float(lp[1] - lp[0]) / (2 * h), atol=1e-5)


def test_mixture_2d_denoiser_and_posterior_against_grid():
    means = [[-0.5, 0.2], [0.6, -0.3]]
    covs = [[[0.04, 0.01], [0.01, 0.02]], [[0.03, -0.01], [-0.01, 0.05]]]
    prior = GaussianMixturePrior([0.35, 0.65], means, covs, shape=(2, 1, 1))
    axis = np.linspace(-1.6, 1.6, 801)
    pts = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    log_prior = np.logaddexp(np.log(0.35) + multivariate_normal(means[0], covs[0]).logpdf(pts),
                             np.log(0.65) + multivariate_normal(means[1], covs[1]).logpdf(pts))
    x = torch.tensor([[0.1, 0.0], [0.5, -0.6]], dtype=F64)
    den = prior.denoise(x.reshape(2, 2, 1, 1), 0.15).reshape(2, 2).numpy()
    for b in range(2):
        log_joint = log_prior - 0.5 * ((pts - x[b].numpy()) ** 2).sum(1) / 0.15**2
        assert np.allclose(den[b], grid_expectation(log_joint, pts, pts), atol=1e-5)
    # posterior for y = Ax + σ_y n with one measurement of the pixel sum
    A, sigma_y, y = np.array([[1.0, 1.0]]), 0.1, np.array([[0.25]])
    post = prior.posterior(torch.tensor(A), torch.tensor(y), sigma_y)
    log_post = log_prior - 0.5 * ((pts @ A.T - y[0]) ** 2).sum(1) / sigma_y**2
    mean = grid_expectation(log_post, pts, pts)
    second = grid_expectation(log_post, pts, (pts[:, :, None] * pts[:, None, :]).reshape(-1, 4)).reshape(2, 2)
    assert np.allclose(post.mean[0].numpy(), mean, atol=1e-5)
    assert np.allclose(post.cov[0].numpy(), second - np.outer(mean, mean), atol=1e-5)
    draws = post.sample(40000, torch.Generator().manual_seed(0))[0].numpy()
    assert np.abs(draws.mean(0) - mean).max() < 5e-3


def test_prior_configs_build():
    tv = build(OmegaConf.load(CONF / "prior" / "tv.yaml"))
    assert isinstance(tv, TVPrior) and tv.name == "tv" and tv.weight > 0
    gauss = build(OmegaConf.load(CONF / "prior" / "gaussian.yaml"))
    assert isinstance(gauss, GaussianPrior) and gauss.shape == (1, 8, 8)
    x = gauss.sample(2, torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and gauss.denoise(x, 0.1).shape == x.shape
    assert float(torch.linalg.eigvalsh(gauss.cov).min()) > 0  # the jitter keeps it positive definite
