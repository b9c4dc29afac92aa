"""Diffusion samplers and solvers (DDS, DPnP, DPS, DiffPIR) against an exact Gaussian model.

Prior N(μ, Σ) on 1×4×4 images (d = 16), served as a DiffusionPrior whose ε-network is the exact E[ε | x_t],
so every denoiser call is Tweedie-exact and only the samplers' own discretisation and Monte-Carlo error
remain. Measurements y = A x + σ_y n with a dense 8×16 A: the posterior is Gaussian and closed form.

Tolerances, all on N parallel chains for one y (seeds fixed, so each check is deterministic):
- means: per coordinate, in Monte-Carlo standard errors SE = √(C_ii/N); the max over 16 coordinates of
  |z| stays below 4.5 for an exact sampler with probability > 0.999 (Bonferroni, two-sided).
- covariances: the trace ratio tr Ĉ / tr C (MC SE ≈ √(2 tr C²/N)/tr C ≈ 0.02-0.03 here) and the relative
  Frobenius error ‖Ĉ − C‖/‖C‖, whose MC floor √((tr C)² + ‖C‖²)/(√N ‖C‖) the test computes.
- discretisation: the ancestral/DDIM denoising samplers lose variance ∝ 1/steps (measured: trace ratio
  0.80 / 0.90 / 0.95 / 0.977 at 25 / 50 / 100 / 200 DDPM levels; 0.84 / 0.91 / 0.94 / 0.96 for DDIM), so
  at 200 steps the allowance is 5 % below and the MC band above.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from invlab.errors import ConfigError
from invlab.priors.diffusion import DiffusionPrior
from invlab.solvers.diffpir import DiffPIR
from invlab.solvers.diffusion_steps import denoising_sampler
from invlab.solvers.dpnp import DPnP, eta_schedule
from invlab.solvers.dps import DPS

from scipy.stats import chi2

from invlab.analysis.exact import (DPNP_CHECK, MatrixOp, gaussian_posterior, linear_gaussian_problem, mean_chi2,
                                   moments, smoothed_posterior, stats)

F64 = torch.float64
SHAPE, D, M, SIGMA_Y = (1, 4, 4), 16, 8, 0.05


@pytest.fixture(scope="module")
def problem():
    p = linear_gaussian_problem(torch.Generator().manual_seed(0), torch.Generator().manual_seed(3), SHAPE, M, SIGMA_Y)
    assert torch.allclose(p.post_mean, p.gp.posterior(p.mat, p.y, SIGMA_Y).mean[0], atol=1e-10)  # cross-check
    return p


# ---- (a) the denoising diffusion sampler samples p(x0 | x0 + η w) ------------------------------------------

@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_denoising_sampler_samples_the_denoising_posterior(problem, kind):
    gp, prior, n, eta = problem.gp, problem.prior, 4000, 0.1  # η in image units (0.2 on the model scale)
    g = torch.Generator().manual_seed(1)
    noisy = gp.sample(1, g, dtype=F64) + eta * torch.randn((1, *SHAPE), generator=g, dtype=F64)
    post = gp.posterior(torch.eye(D, dtype=F64), noisy.reshape(1, -1), eta)  # A = I, σ_y = η
    v = prior.to_model(noisy).expand(n, *SHAPE).contiguous()
    prior.stats.reset()
    z = denoising_sampler(prior, v, 2 * eta, steps=200, kind=kind, generator=torch.Generator().manual_seed(2))
    assert prior.stats.nfe == 200
    zmax, trace, rel, floor = stats(prior.from_model(z), post.mean[0], post.cov[0])
    assert zmax < 4.5
    assert 0.95 < trace < 1.03, trace            # discretisation ≤ 4 % (measured 2.3 % / 3.9 %) + MC
    assert rel < 2 * floor + 0.05, (rel, floor)


def test_denoising_sampler_uses_the_doubled_model_noise(problem):
    """Teeth: treating the image-space η as the model-space level gives a visibly wrong spread."""
    gp, prior, n, eta = problem.gp, problem.prior, 4000, 0.1
    g = torch.Generator().manual_seed(1)
    noisy = gp.sample(1, g, dtype=F64) + eta * torch.randn((1, *SHAPE), generator=g, dtype=F64)
    post = gp.posterior(torch.eye(D, dtype=F64), noisy.reshape(1, -1), eta)
    v = prior.to_model(noisy).expand(n, *SHAPE).contiguous()
    z = denoising_sampler(prior, v, eta, steps=100, kind="ddpm", generator=torch.Generator().manual_seed(2))
    assert stats(prior.from_model(z), post.mean[0], post.cov[0])[1] < 0.8


# ---- (b) DPnP samples the posterior ---------------------------------------------------------------------

DPNP_TEST = DPNP_CHECK
CHI2_LIMIT = float(chi2.ppf(0.999, D))   # 39.25: the mean's χ²₁₆ statistic of an exact sampler stays below it


@pytest.mark.parametrize("kind", ["ddim", pytest.param("ddpm", marks=pytest.mark.slow)])
def test_dpnp_samples_the_posterior(problem, kind):
    """After the settle phase at η_min the DPnP Gibbs chain's x-marginal is the posterior under the likelihood
    smoothed by η_min: noise covariance σ_y²I + (η/2)²AAᵀ in image units (η_min = 0.05 on the model scale),
    the exact target here; as η_min → 0 it is p(x | y). Measured (N = 1000): the mean's χ² statistic 19.8 /
    17.4 (limit 39.25), max|z| 2.48 / 2.22, trace ratio 0.967 / 0.954, relative cov error 0.091 / 0.093 (MC
    floor 0.096), distance to the exact posterior mean 0.11 / 0.10 of the prior-to-posterior shift."""
    n, A = 1000, problem.A
    solver = DPnP(denoiser_sampler=kind, **DPNP_TEST)
    res = solver(problem.y.expand(n, -1).contiguous(), A, problem.prior,
                 generator=torch.Generator().manual_seed(5))
    assert res.nfe == (4 + 12 + 60) * 50 and len(res.trace["eta"]) == 76
    assert res.trace["eta"][-61:] == [pytest.approx(DPNP_TEST["eta_min"])] * 61
    mean, cov = smoothed_posterior(problem, DPNP_TEST["eta_min"])
    zmax, trace, rel, floor = stats(res.x, mean, cov)
    assert mean_chi2(res.x, mean, cov) < CHI2_LIMIT
    assert zmax < 4.5 and 0.9 < trace < 1.1 and rel < 2 * floor + 0.05, (zmax, trace, rel, floor)
    m, _ = moments(res.x)
    assert float((m - problem.post_mean).norm()) < 0.2 * problem.shift


def test_dpnp_without_the_settle_phase_has_not_reached_its_target(problem):
    """Teeth: the paper code's schedule (k_settle = 0) reaches η_min on its last iteration only, and the chain
    lags behind the η_min target: the mean's χ² statistic is 72.8 here (N = 1000, DDIM), far above 39.25."""
    n = 1000
    res = DPnP(denoiser_sampler="ddim", **{**DPNP_TEST, "k_settle": 0})(
        problem.y.expand(n, -1).contiguous(), problem.A, problem.prior, generator=torch.Generator().manual_seed(5))
    assert res.nfe == (4 + 12) * 50
    assert mean_chi2(res.x, *smoothed_posterior(problem, DPNP_TEST["eta_min"])) > 1.5 * CHI2_LIMIT


def test_eta_schedule_matches_the_reference_code_then_settles():
    etas = eta_schedule(0.4, 0.16, 4, 12)
    assert len(etas) == 16 and etas[:5] == [0.4] * 5 and etas[-1] == pytest.approx(0.16)
    ratios = [b / a for a, b in zip(etas[4:], etas[5:])]
    assert all(r == pytest.approx((0.16 / 0.4) ** (1 / 11)) for r in ratios)
    settled = eta_schedule(0.4, 0.16, 4, 12, k_settle=4)
    assert settled[:16] == etas and settled[16:] == [0.16] * 4
    assert DPnP().k_settle == 4 and len(eta_schedule(DPnP().eta_max, DPnP().eta_min, 4, 12, DPnP().k_settle)) == 20


# ---- (c) DPS is biased: a measured fact -----------------------------------------------------------------

def test_dps_bias_is_measured(problem):
    """DPS (200 respaced DDPM steps, ζ = 0.3) on the exact Gaussian model is not a posterior sampler.
    Measured: max|z| of its mean 10.2 SE, mean error 0.070 = 0.34 of the prior-to-posterior shift, and a
    covariance trace ratio of 0.74 (its spread is too small); relative cov error 0.33."""
    n = 1000
    res = DPS(steps=200, zeta=0.3, clip=False)(problem.y.expand(n, -1).contiguous(), problem.A, problem.prior,
                                               generator=torch.Generator().manual_seed(5))
    assert res.nfe == 200
    zmax, trace, rel, _ = stats(res.x, problem.post_mean, problem.post_cov)
    m, _ = moments(res.x)
    assert zmax > 6.0                                                   # mean bias far beyond MC error
    assert float((m - problem.post_mean).norm()) > 0.2 * problem.shift
    assert trace < 0.85 and rel > 0.2                                   # variance too small
    assert float((m - problem.post_mean).norm()) < problem.shift        # ... but it does move towards y


# ---- (d) DiffPIR ----------------------------------------------------------------------------------------

def test_diffpir_fits_the_data_and_lands_near_the_posterior_mean(problem):
    """DiffPIR (paper defaults λ = 1, ζ = 0.1, 100 steps) is not an exact sampler; on this model its sample
    mean lies 0.057 from the posterior mean (0.28 of the prior-to-posterior shift; tolerance 0.4) and its
    residual ‖y − Ax‖ is 0.058 vs 0.18 at the prior mean (tolerance: half of it)."""
    n, A, y = 1000, problem.A, problem.y
    res = DiffPIR(clip=False)(y.expand(n, -1).contiguous(), A, problem.prior,
                              generator=torch.Generator().manual_seed(5))
    assert res.nfe == 100 and len(res.trace["data_residual"]) == 100
    prior_resid = float((y - A(problem.gp.mean.reshape(1, *SHAPE))).norm())
    resid = float((y - A(res.x)).norm(dim=1).mean())
    assert resid < 0.5 * prior_resid
    m, _ = moments(res.x)
    assert float((m - problem.post_mean).norm()) < 0.4 * problem.shift


# ---- (e) configuration errors; (f) configs -------------------------------------------------------------

def test_dps_needs_a_differentiable_prior(problem):
    prior = DiffusionPrior(net=problem.prior.net, schedule=problem.prior.schedule)
    prior.differentiable = False
    with pytest.raises(ConfigError, match="dps needs gradients through the prior"):
        DPS(steps=5)(problem.y, problem.A, prior)
    for solver in (DPS(steps=5), DiffPIR(steps=5)):
        with pytest.raises(ConfigError, match="needs a diffusion prior"):
            solver(problem.y, problem.A, problem.gp)
    with pytest.raises(ConfigError, match="denoiser_sampler"):
        DPnP(denoiser_sampler="sde")(problem.y, problem.A, problem.prior)
    with pytest.raises(ConfigError, match="k_settle"):
        DPnP(k_settle=-1)(problem.y, problem.A, problem.prior)


CLASSES = {"dps": "DPS", "diffpir": "DiffPIR", "dpnp": "DPnP", "dmplug": "DMPlug", "dolph": "DOLPH",
           "pnp_dm": "PnPDM"}


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_solver_configs_select_the_mnist_diffusion_prior(name):
    from hydra import compose, initialize_config_dir

    from invlab.utils.config import build

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("config", overrides=[f"solver={name}", "task=deblur"])
        mine = compose("config", overrides=[f"solver={name}", "prior=gaussian", "data=digits"])
    assert cfg.prior.name == "ddpm_mnist" and cfg.data.name == "mnist_test8" and cfg.data.limit == 8
    assert mine.prior.name == "gaussian" and mine.data.name == "digits"  # the command line still wins
    solver = build(cfg.solver)
    assert solver.name == name and type(solver).__name__ == CLASSES[name]
    assert OmegaConf.to_container(cfg.solver).keys() >= {"name", "_target_"}


def test_solvers_run_end_to_end_with_nfe_counted(problem):
    prior, A = problem.prior, problem.A
    for solver, nfe in ((DPS(steps=10), 10), (DiffPIR(steps=10), 10),
                        (DPnP(k_start=1, k=2, dds_steps=5, pcs_iters=10), 35),     # 1 + 2 + 4 settle
                        (DPnP(k_start=1, k=2, dds_steps=5, pcs_iters=10, init="dps", init_steps=7), 42)):
        res = solver(problem.y, A, prior, generator=torch.Generator().manual_seed(0))
        assert res.nfe == nfe and res.x.shape == (1, *SHAPE) and torch.isfinite(res.x).all()
        assert 0 < res.net_seconds <= res.seconds, solver   # eps calls are timed too (DPS: forward only)
        assert 0 <= float(res.x.min()) and float(res.x.max()) <= 1  # clip=True by default


def test_likelihood_norm_is_the_residual_norm_for_gaussian_terms_and_follows_the_nll_for_quantized():
    """DPS's ‖y − A(x̂0)‖ comes from √(2·data_fidelity): the plain residual norm (complex MRI included) for
    every Gaussian-data-term operator, and for 1-bit quantisation a function of its NLL whose gradient points
    along the NLL gradient (the logit residual ‖y − a‖ would not)."""
    import invlab.ops  # noqa: F401  (registers every operator)
    from invlab.ops.base import OPERATORS
    from invlab.solvers.diffusion_steps import likelihood_norm

    g = torch.Generator().manual_seed(0)
    for name, cls in sorted(OPERATORS.items()):
        shape = (1, *([cls.example_frames] if getattr(cls, "video", False) else []), 16, 16)   # clips for video ops
        x = torch.rand(2, *shape, generator=g, dtype=F64)
        A = cls.example(shape, generator=torch.Generator().manual_seed(1)).to(F64)
        y = A(torch.rand(2, *shape, generator=g, dtype=F64)).detach()
        if name == "quantized":
            y = torch.where(torch.rand(y.shape, generator=g, dtype=F64) < torch.sigmoid(y), 1.0, -1.0).to(F64)
            xg = x.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(likelihood_norm(A, y, xg).sum(), xg)
            cos = torch.nn.functional.cosine_similarity(grad.flatten(1), A.grad(x, y).flatten(1))
            assert bool((cos > 1 - 1e-9).all())
            continue
        r = y - A(x)
        expected = (r.abs() if r.is_complex() else r).flatten(1).norm(dim=1)
        assert torch.allclose(likelihood_norm(A, y, x), expected, rtol=1e-10), name
