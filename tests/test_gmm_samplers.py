"""The denoising diffusion sampler against an exact Gaussian-mixture prior.

Prior: three Gaussian components on 1×2×2 images (d = 4), weights 0.5 / 0.3 / 0.2, served as a
DiffusionPrior whose ε-network is exact (invlab.analysis.exact.GaussianMixtureEps, through the mixture's closed-form
score). `denoising_sampler(prior, v, η)` must draw from p(x0 | x0 + η w = v), which is the mixture posterior
with A = I and σ_y = η (GaussianMixturePrior.posterior): component weights (0.365, 0.263, 0.372) for the v
used here — far from the prior's, so a sampler that ignored v or the mixture would fail by > 20 SE.

Tolerances, on N = 4000 parallel chains for one v (seeds fixed, so each check is deterministic):
- mean: per coordinate in Monte-Carlo standard errors √(C_ii/N) (valid for any law, by the CLT); the max over
  4 coordinates stays below 4 for an exact sampler with probability > 0.999.
- mixture weights: each draw is labelled by its nearest posterior component mean; the labelled fractions
  are compared with those of 200,000 exact posterior draws labelled the same way (so mislabelling cancels),
  in standard errors √(q(1−q)/N) (plus the reference's own, negligible); max |z| over 3 components < 4.
- covariance: trace ratio and relative Frobenius error against the exact mixture covariance (within- plus
  between-component spread). A mixture's sample covariance is not Wishart, so the MC floor of the relative
  error is measured: the RMS over 20 exact-draw replicates of size N. Discretisation: the Gaussian tests
  (test_diffusion_samplers.py) measured a variance loss of 2.3 % (ddpm) / 3.9 % (ddim) at 200 levels.
"""
from __future__ import annotations

import pytest
import torch

from invlab.priors.diffusion import DiffusionPrior
from invlab.priors.gaussian import GaussianMixturePrior
from invlab.priors.schedule import DDPMSchedule
from invlab.solvers.diffusion_steps import denoising_sampler

from invlab.analysis.exact import GaussianMixtureEps

F64 = torch.float64
SHAPE, D, K, N, ETA = (1, 2, 2), 4, 3, 4000, 0.1   # η in image units (0.2 on the model scale)


@pytest.fixture(scope="module")
def mixture():
    g = torch.Generator().manual_seed(0)
    r = 0.25   # component means: 0.5 + a scaled simplex, pairwise 0.35 apart; component stds ≤ 0.07
    means = 0.5 + r * torch.eye(D, dtype=F64)[:K] - r / 3 * torch.tensor([1.0, 1, 1, 0], dtype=F64)
    roots = torch.randn(K, D, D, generator=g, dtype=F64)
    covs = 0.002 * roots @ roots.transpose(1, 2) / D + 0.0005 * torch.eye(D, dtype=F64)
    gmm = GaussianMixturePrior([0.5, 0.3, 0.2], means.reshape(K, *SHAPE), covs)
    sched = DDPMSchedule()
    prior = DiffusionPrior(net=GaussianMixtureEps(gmm, sched), schedule=sched, image_size=SHAPE[1:])
    centre = means.mean(0)
    v = centre + 0.1 * (means[2] - centre)          # a point that leaves all three components plausible
    post = gmm.posterior(torch.eye(D, dtype=F64), v[None], ETA)
    return gmm, prior, v, post


def labels(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre for each row of x (N, d)."""
    return torch.cdist(x.to(F64), centres).argmin(1)


def test_mixture_eps_is_the_exact_noise_predictor(mixture):
    """E[ε | x_t] from the helper equals the Tweedie identity through the prior's own denoiser:
    ε̂ = (x − D(x, σ))/σ with x = (x_t/√ᾱ + 1)/2 and σ = √((1−ᾱ)/ᾱ)/2 (an independent closed form)."""
    gmm, prior, _, _ = mixture
    g = torch.Generator().manual_seed(4)
    x_t = torch.randn((6, *SHAPE), generator=g, dtype=F64)
    t = torch.tensor([0.0, 3.5, 50, 200, 600, 999], dtype=F64)
    ab = prior.schedule.alpha_bar(t).view(-1, 1, 1, 1)
    sigma = ((1 - ab) / ab).sqrt() / 2
    x = (x_t / ab.sqrt() + 1) / 2
    expected = (x - gmm.denoise(x, sigma.reshape(-1))) / sigma
    assert torch.allclose(prior.net(x_t, t), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_denoising_sampler_samples_the_mixture_posterior(mixture, kind):
    """Measured (N = 4000, 200 levels): max|z| of the mean 1.98 (ddpm) / 1.03 (ddim); labelled weights
    (0.368, 0.263, 0.369) / (0.372, 0.266, 0.362) vs exact (0.365, 0.266, 0.370), max|z| 0.40 / 0.95;
    trace ratio 0.986 / 0.982; relative cov error 0.021 / 0.015 (measured MC floor 0.020)."""
    gmm, prior, v, post = mixture
    vm = prior.to_model(v.reshape(1, *SHAPE)).expand(N, *SHAPE).contiguous()
    prior.stats.reset()
    z = denoising_sampler(prior, vm, 2 * ETA, steps=200, kind=kind, generator=torch.Generator().manual_seed(2))
    assert prior.stats.nfe == 200
    x = prior.from_model(z).reshape(N, D).to(F64)
    mean, cov = post.mean[0], post.cov[0]

    z_mean = ((x.mean(0) - mean) / (cov.diagonal() / N).sqrt()).abs().max()
    assert z_mean < 4.0, float(z_mean)

    centres = post.means[0]
    exact = post.sample(200_000, torch.Generator().manual_seed(7))[0]
    q = torch.bincount(labels(exact, centres), minlength=K).to(F64) / exact.shape[0]
    p = torch.bincount(labels(x, centres), minlength=K).to(F64) / N
    se = (q * (1 - q) / N + q * (1 - q) / exact.shape[0]).sqrt()
    z_w = ((p - q) / se).abs().max()
    assert z_w < 4.0, (p, q, float(z_w))
    assert ((q - gmm.weights) / se).abs().max() > 20   # the check can tell the posterior from the prior

    c = torch.cov(x.T)
    floor = torch.stack([(torch.cov(s.T) - cov).norm() / cov.norm()
                         for s in exact[: 20 * N].reshape(20, N, D)]).pow(2).mean().sqrt()
    trace, rel = float(c.trace() / cov.trace()), float((c - cov).norm() / cov.norm())
    assert 0.95 < trace < 1.04, trace                # ≤ 5 % discretisation loss, MC band above
    assert rel < 2 * float(floor) + 0.05, (rel, float(floor))


def test_denoising_sampler_with_the_wrong_level_misses_the_weights(mixture):
    """Teeth: passing the image-space η as the model-space level (half the true noise) trusts v too much,
    which shifts the weights towards the component v leans to. Measured: (0.04, 0.04, 0.92), max|z| 71."""
    gmm, prior, v, post = mixture
    vm = prior.to_model(v.reshape(1, *SHAPE)).expand(N, *SHAPE).contiguous()
    z = denoising_sampler(prior, vm, ETA, steps=100, kind="ddpm", generator=torch.Generator().manual_seed(2))
    p = torch.bincount(labels(prior.from_model(z).reshape(N, D), post.means[0]), minlength=K).to(F64) / N
    q = post.weights[0]
    assert ((p - q) / (q * (1 - q) / N).sqrt()).abs().max() > 6
