"""PnP solvers against closed forms: with an exact Gaussian prior and a dense linear operator, every
solver's fixed point is the minimiser of a known quadratic (derived in each solver's docstring)."""
from __future__ import annotations

import math
import pathlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from invlab.errors import ConfigError
from invlab.ops.base import Operator
from invlab.priors.base import Prior
from invlab.priors.gaussian import GaussianPrior
from invlab.solvers.base import Solver
from invlab.solvers.common import normal_op_norm
from invlab.solvers.denoiser import Denoiser
from invlab.solvers.pnp_admm import PnPADMM
from invlab.solvers.pnp_hqs import PnPHQS
from invlab.solvers.pnp_pgd import PnPPGD
from invlab.solvers.red import RED
from invlab.utils.config import build
from invlab.analysis.exact import MatrixOp

CONF = pathlib.Path(__file__).resolve().parents[1] / "conf"
SHAPE, M, B, SIGMA_Y = (1, 3, 4), 8, 3, 0.1
D = math.prod(SHAPE)


class Square(Operator):
    """A nonlinear operator: elementwise x²."""

    def forward(self, x):
        return x**2

    def baseline(self, y):
        return y.clamp_min(0).sqrt()


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    mat = torch.randn(M, D, generator=g, dtype=torch.float64) / math.sqrt(D)
    root = torch.randn(D, D, generator=g, dtype=torch.float64)
    cov = 0.05 * root @ root.T / D + 0.01 * torch.eye(D, dtype=torch.float64)
    mean = 0.5 + 0.1 * torch.randn(D, generator=g, dtype=torch.float64)
    prior = GaussianPrior(mean.reshape(SHAPE), cov)
    x = prior.sample(B, g, dtype=torch.float64)
    A = MatrixOp(mat, SHAPE, SIGMA_Y)
    y = A(x) + SIGMA_Y * torch.randn(B, M, generator=g, dtype=torch.float64)
    return SimpleNamespace(A=A, y=y, prior=prior, mat=mat.numpy(), cov=cov.numpy(), mean=mean.numpy(),
                           P=np.linalg.inv(cov.numpy()))


def minimiser(p, H_data, b_data, weight, Q):
    """argmin ½xᵀH_data x − b_dataᵀx + weight/2 (x − μ)ᵀQ(x − μ), per sample, as (B, C, H, W)."""
    lhs = H_data + weight * Q
    rhs = b_data + weight * (Q @ p.mean)[:, None]
    return torch.as_tensor(np.linalg.solve(lhs, rhs).T).reshape(-1, *SHAPE)


def normal_eq(p):
    return p.mat.T @ p.mat, p.mat.T @ p.y.numpy().T


def test_admm_converges_to_the_posterior_mean(problem):
    p, sigma = problem, 0.2
    rho = SIGMA_Y**2 / sigma**2  # ρσ² = σ_y²: the ADMM objective is the negative log posterior
    out = PnPADMM(iters=300, rho=rho, sigma_den=sigma)(p.y, p.A, p.prior).x
    post = p.prior.posterior(p.A.matrix, p.y, SIGMA_Y).mean.reshape(out.shape)
    assert torch.allclose(out, post, atol=1e-5)
    # independently: Gaussian posterior mean in information form
    assert torch.allclose(out, minimiser(p, *normal_eq(p), SIGMA_Y**2, p.P), atol=1e-5)


def test_admm_increasing_rho_keeps_the_fixed_point(problem):
    p, sigma, rho = problem, 0.3, 0.5
    expected = minimiser(p, *normal_eq(p), rho * sigma**2, p.P)
    out = PnPADMM(iters=200, rho=rho, rho_growth=1.03, sigma_den=sigma)(p.y, p.A, p.prior).x
    assert torch.allclose(out, expected, atol=1e-5)


def test_hqs_fixed_point_is_the_moreau_envelope_map(problem):
    p, sigma, lam = problem, 0.2, 0.5
    alpha = lam * SIGMA_Y**2 / sigma**2
    solver = PnPHQS(iters=300, sigma_max=sigma, sigma_min=sigma, lam=lam)  # constant schedule
    out = solver(p.y, p.A, p.prior).x
    # x* = argmin ½(Ax − y)ᵀ(αI + AAᵀ)⁻¹(Ax − y) + σ²h(x)
    W = np.linalg.inv(alpha * np.eye(M) + p.mat @ p.mat.T)
    expected = minimiser(p, p.mat.T @ W @ p.mat, p.mat.T @ W @ p.y.numpy().T, sigma**2, p.P)
    assert torch.allclose(out, expected, atol=1e-5)


class Recorder(Prior):
    """Identity denoiser that records the σ it is called with."""

    def __init__(self):
        super().__init__()
        self.sigmas = []

    def _denoise(self, x, sigma):
        self.sigmas.append(sigma.clone())
        return x


def test_hqs_follows_dpir_schedule(problem):
    rhos = []

    class RecordingOp(MatrixOp):
        def prox_l2(self, z, y, rho, iters=100, lr=None):
            rhos.append(torch.as_tensor(rho).clone())
            return super().prox_l2(z, y, rho, iters, lr)

    A, prior = RecordingOp(problem.A.matrix, SHAPE, sigma_y=7.65 / 255), Recorder()
    PnPHQS()(problem.y, A, prior)
    sigmas = np.logspace(np.log10(49.0), np.log10(7.65), 8) / 255.0  # DPIR's get_rho_sigma
    got = torch.stack(prior.sigmas)[:, 0].numpy()
    assert np.allclose(got, sigmas, rtol=1e-6)
    assert np.allclose(torch.stack(rhos)[:, 0].numpy(), 0.23 * (7.65 / 255) ** 2 / sigmas**2, rtol=1e-6)


@pytest.mark.parametrize("fista", [False, True])
def test_pgd_fixed_point(problem, fista):
    p, sigma = problem, 0.1
    gamma = 0.9 / np.linalg.eigvalsh(p.mat.T @ p.mat).max()
    out = PnPPGD(iters=400, gamma=gamma, fista=fista, sigma_den=sigma)(p.y, p.A, p.prior).x
    assert torch.allclose(out, minimiser(p, *normal_eq(p), sigma**2 / gamma, p.P), atol=1e-5)


@pytest.mark.parametrize("method", ["gd", "nesterov", "fixed_point"])
def test_red_fixed_point(problem, method):
    p, sigma, tau = problem, 0.2, 1.0
    out = RED(iters=400, method=method, tau=tau, sigma_den=sigma)(p.y, p.A, p.prior).x
    # Wiener D(x) = Wx + (I − W)μ: the minimiser of ½‖Ax − y‖² + τ/2 (x − μ)ᵀ(I − W)(x − μ)
    W = p.cov @ np.linalg.inv(p.cov + sigma**2 * np.eye(D))
    assert torch.allclose(out, minimiser(p, *normal_eq(p), tau, np.eye(D) - W), atol=1e-5)


def test_power_iteration_estimates_the_lipschitz_constant(problem):
    like = torch.zeros(B, *SHAPE, dtype=torch.float64)
    est = normal_op_norm(problem.A, like, iters=100)
    top = np.linalg.eigvalsh(problem.mat.T @ problem.mat).max()
    assert est.shape == (B,) and np.allclose(est.numpy(), top, rtol=1e-3)


SOLVERS = [PnPADMM(iters=7), PnPHQS(iters=5), PnPPGD(iters=6), PnPPGD(iters=6, fista=True), RED(iters=4),
           RED(iters=4, method="fixed_point"), Denoiser()]


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
def test_nfe_and_one_callback_per_iteration(problem, solver):
    calls = []
    r = solver(problem.y, problem.A, problem.prior, callback=lambda k, x, info: calls.append((k, info)))
    iters = getattr(solver, "iters", 1)
    assert r.nfe == iters and [k for k, _ in calls] == list(range(iters))
    assert len(r.trace["residual"]) == iters and all(info["residual"].shape == (B,) for _, info in calls)
    assert r.x.shape == (B, *SHAPE) and r.seconds >= r.net_seconds > 0


@pytest.mark.parametrize("solver", [PnPADMM(iters=20, sigma_den_factor=2.0), PnPHQS(), PnPPGD(iters=20),
                                    RED(iters=20, sigma_den_factor=1.0), Denoiser()],
                         ids=lambda s: type(s).__name__)
def test_batched_solve_equals_per_sample_solves(problem, solver):
    sigma_y = torch.tensor([0.05, 0.1, 0.2], dtype=torch.float64)  # per-sample noise levels
    batched = solver(problem.y, MatrixOp(problem.A.matrix, SHAPE, sigma_y), problem.prior).x
    for b in range(B):
        single = solver(problem.y[b:b + 1], MatrixOp(problem.A.matrix, SHAPE, float(sigma_y[b])), problem.prior).x
        assert torch.allclose(batched[b:b + 1], single, atol=1e-6)


def test_denoiser_solver_applies_the_prior_once_at_sigma_y(problem):
    eye = MatrixOp(torch.eye(D, dtype=torch.float64), SHAPE, SIGMA_Y)
    y = problem.y.new_tensor(np.random.default_rng(0).random((B, D)))
    r = Denoiser()(y, eye, problem.prior)
    assert r.nfe == 1 and torch.allclose(r.x, problem.prior.denoise(eye.baseline(y), SIGMA_Y), atol=1e-9)
    # the baseline of the identity is y itself up to pinv's 1e-4 Tikhonov term
    assert torch.allclose(r.x, problem.prior.denoise(y.reshape(B, *SHAPE), SIGMA_Y), atol=1e-3)


@pytest.mark.parametrize("path", sorted((CONF / "solver").glob("*.yaml")), ids=lambda p: p.stem)
def test_solver_configs_build(problem, path):
    solver = build(OmegaConf.load(path))
    assert isinstance(solver, Solver) and solver.name == path.stem
    if getattr(solver, "minibatch", None) is not None:  # ODER: needs stochastic_grad (tests/test_oder.py)
        with pytest.raises(ConfigError, match="stochastic_grad"):
            solver(problem.y, problem.A, problem.prior)
    elif type(solver) in (PnPADMM, PnPHQS, PnPPGD, RED, Denoiser):  # plain-denoiser solvers run on any prior
        r = solver(problem.y, problem.A, problem.prior)
        assert torch.isfinite(r.x).all() and r.nfe > 0


def test_linearity_requirements_raise_config_errors(problem):
    x = torch.rand(B, *SHAPE, dtype=torch.float64)
    sq = Square(SHAPE)
    y = sq(x)

    class NeedsAdjoint(PnPADMM):
        needs = ("adjoint",)

    with pytest.raises(ConfigError):
        NeedsAdjoint(iters=2)(y, sq, problem.prior)
    for solver in (PnPPGD(iters=2), RED(iters=2)):  # no ‖AᵀA‖ for a nonlinear A: the Armijo step (issue 16)
        assert torch.isfinite(solver(y, sq, problem.prior).x).all()
    # with an explicit step, or through the prox, nonlinear operators work (autograd / GD fallbacks)
    for solver in (PnPPGD(iters=3, gamma=0.1), RED(iters=3, gamma=0.1), PnPADMM(iters=3), PnPHQS(iters=3)):
        assert torch.isfinite(solver(y, sq, problem.prior).x).all()


def test_divergence_is_not_hidden(problem):
    class Exploding(Prior):
        def _denoise(self, x, sigma):
            return x * float("nan")

    out = PnPADMM(iters=3)(problem.y, problem.A, Exploding()).x
    assert torch.isnan(out).all()


def test_bad_settings_raise_config_errors(problem):
    with pytest.raises(ConfigError):
        RED(method="adam")(problem.y, problem.A, problem.prior)
    with pytest.raises(ConfigError):
        PnPADMM(rho=0.0)(problem.y, problem.A, problem.prior)


def test_pnp_admm_with_tv_improves_on_the_blurred_input():
    """The tuned configs (pnp_admm + tv) on a 128² camera crop deblurred with the real Blur operator."""
    from skimage import data

    from invlab.ops.blur import Blur
    from invlab.ops.noise import Gaussian

    x = torch.tensor(data.camera()[::2, ::2][64:192, 64:192] / 255.0, dtype=torch.float32)[None, None]
    A = Blur.gaussian((1, 128, 128), kernel_size=25, kernel_std=2.0)
    A.noise = Gaussian(0.02)
    y = A.noise(A(x), torch.Generator().manual_seed(0))
    solver = build(OmegaConf.load(CONF / "solver" / "pnp_admm.yaml"))
    prior = build(OmegaConf.load(CONF / "prior" / "tv.yaml"))
    r = solver(y, A, prior)

    def psnr(u):
        return float(-10 * torch.log10(((u.clamp(0, 1) - x) ** 2).mean()))

    assert psnr(r.x) > psnr(A.baseline(y)) + 2.0
    assert r.trace["residual"][-1] < 1e-3
