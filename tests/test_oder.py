"""ODER = RED with a minibatch data gradient (invlab/solvers/red.py `minibatch`, invlab/ops/radon.py).

Exact references: a dense matrix of a small Radon operator (built column by column from its forward
projection), enumeration of every stratified draw, and, for the solver, the exact Gaussian prior, whose
RED fixed point solves a linear system and whose stochastic iteration has a stationary error covariance
given by a (discrete) Lyapunov equation.
"""
from __future__ import annotations

import itertools
import math
import pathlib
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from invlab.errors import ConfigError
from invlab.ops.base import Operator
from invlab.ops.radon import Radon
from invlab.priors.gaussian import GaussianPrior
from invlab.solvers.red import RED
from invlab.utils.config import build
from invlab.analysis.exact import MatrixOp

F64 = torch.float64
CONF = pathlib.Path(__file__).resolve().parents[1] / "conf"
N, N_ANGLES = 5, 12            # 5×5 images, 12 angles; minibatch 4 = strata of 3 angles (ODER's 1/3)


def radon(n_angles: int = N_ANGLES, sigma_y: float = 0.1) -> Radon:
    A = Radon.parallel_beam((1, N, N), n_angles=n_angles).double()
    A.noise = SimpleNamespace(sigma=sigma_y)
    return A


def dense(A: Radon) -> torch.Tensor:
    """The operator as a (n_angles·N, N²) matrix, from the forward projection of each pixel."""
    basis = torch.eye(N * N, dtype=F64).reshape(-1, 1, N, N)
    return A(basis).reshape(N * N, -1).T


def rows(angles) -> torch.Tensor:
    """Matrix rows (angle-major sinogram layout) of the given angle indices."""
    return torch.cat([torch.arange(a * N, (a + 1) * N) for a in angles])


def data(A: Radon, b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 1, N, N, generator=g, dtype=F64)
    y = A(torch.rand(b, 1, N, N, generator=g, dtype=F64)) + 0.1 * torch.randn(b, 1, A.out_shape[1], N,
                                                                                  generator=g, dtype=F64)
    return x, y


# ---- the operator capability ---------------------------------------------------------------------
def test_subset_gradient_matches_the_dense_matrix_and_autograd():
    A = radon()
    M, (x, y) = dense(A), data(A)
    subset, w = torch.tensor([1, 4, 8, 11]), torch.tensor([3.0, 3.0, 2.0, 4.0], dtype=F64)
    r = rows(subset.tolist())
    ws = w.repeat_interleave(N)
    expected = ((x.flatten(1) @ M[r].T - y.flatten(1)[:, r]) * ws) @ M[r]
    assert torch.allclose(A.subset_grad(x, y, subset, w).flatten(1), expected, rtol=1e-10, atol=1e-10)
    # scalar weight = the autograd gradient of ½‖A_S x − y_S‖² of an operator built on those angles only
    A_sub = Radon((1, N, N), A.angles[0, subset]).double()
    auto = Operator.grad(A_sub, x, y[:, :, subset])
    assert torch.allclose(A.subset_grad(x, y, subset, 3.0), 3.0 * auto, rtol=1e-10, atol=1e-10)
    # the full gradient (one projection + its vector–Jacobian product) against the matrix
    full = (x.flatten(1) @ M.T - y.flatten(1)) @ M
    assert torch.allclose(A.grad(x, y).flatten(1), full, rtol=1e-10, atol=1e-10)


def test_strata_of_one_partition_average_to_the_full_gradient():
    A = radon()
    x, y = data(A)
    k, s = 4, N_ANGLES // 4                     # minibatch 1/3: 4 strata of 3 consecutive angles
    parts = [torch.arange(r, N_ANGLES, s) for r in range(s)]   # the r-th angle of every stratum
    assert sorted(torch.cat(parts).tolist()) == list(range(N_ANGLES))
    mean = sum(A.subset_grad(x, y, p, float(N_ANGLES) / k) for p in parts) / s
    assert torch.allclose(mean, A.grad(x, y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_angles,size", [(12, 1 / 3), (10, 4)])
def test_expectation_over_every_draw_is_the_full_gradient(n_angles, size):
    """Enumerates the draw's support: one angle per stratum, independently uniform; 10 angles in 4 strata
    gives unequal strata (2, 3, 2, 3) and so unequal weights."""
    A = radon(n_angles)
    x, y = data(A)
    picks, weights = A.draw_angles(size, torch.Generator().manual_seed(0))
    k = picks.numel()
    bounds = [i * n_angles // k for i in range(k + 1)]
    strata = [range(bounds[i], bounds[i + 1]) for i in range(k)]
    assert torch.equal(weights, torch.tensor([len(st) for st in strata], dtype=F64))
    assert all(int(p) in st for p, st in zip(picks, strata))
    draws = list(itertools.product(*strata))
    mean = sum(A.subset_grad(x, y, torch.tensor(d), weights) for d in draws) / len(draws)
    assert torch.allclose(mean, A.grad(x, y), rtol=1e-12, atol=1e-12)


def test_draws_are_uniform_within_each_stratum():
    """3,000 draws of 4 of 12 angles: each angle is picked ~Binomial(3000, 1/3) times (sd 25.8); 5 sd."""
    A, g = radon(), torch.Generator().manual_seed(1)
    counts = torch.zeros(N_ANGLES)
    for _ in range(3000):
        picks, _ = A.draw_angles(4, g)
        assert torch.equal(picks // 3, torch.arange(4))          # exactly one angle per stratum
        counts[picks] += 1
    assert float((counts - 1000).abs().max()) < 5 * math.sqrt(3000 * (1 / 3) * (2 / 3))


def test_minibatch_sizes_are_checked():
    A = radon()
    assert A.draw_angles(1.0)[0].tolist() == list(range(N_ANGLES))   # all angles, weight 1
    assert A.draw_angles(0.5)[0].numel() == 6 and A.draw_angles(5)[0].numel() == 5
    for bad in (0.0, 1.5, 0, 13, "third", True):
        with pytest.raises(ConfigError):
            A.draw_angles(bad)


# ---- the solver ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gaussian_ct():
    """A small CT problem with an exact Gaussian prior. RED's fixed point solves Hx = b with
    H = AᵀA + τQ, Q = I − W = σ²(Σ + σ²I)⁻¹ (the Wiener denoiser's residual, test_solvers.py)."""
    g = torch.Generator().manual_seed(0)
    d = N * N
    root = torch.randn(d, d, generator=g, dtype=F64)
    cov = 0.05 * root @ root.T / d + 0.01 * torch.eye(d, dtype=F64)
    mean = 0.5 + 0.1 * torch.randn(d, generator=g, dtype=F64)
    prior = GaussianPrior(mean.reshape(1, N, N), cov)
    A = radon()
    x = prior.sample(1, g, dtype=F64)
    y = A(x) + 0.1 * torch.randn(1, 1, N_ANGLES, N, generator=g, dtype=F64)
    sigma, tau = 0.2, 30.0        # τ large enough that H is well conditioned (κ ≈ 8: short runs)
    M = dense(A)
    Q = torch.eye(d, dtype=F64) - cov @ torch.linalg.inv(cov + sigma**2 * torch.eye(d, dtype=F64))
    H = M.T @ M + tau * Q
    b = M.T @ y.flatten() + tau * Q @ mean
    x_star = torch.linalg.solve(H, b)
    return SimpleNamespace(A=A, y=y, prior=prior, M=M, Q=Q, H=H, mean=mean, x_star=x_star,
                           sigma=sigma, tau=tau, d=d)


def stationary_mse(p, gamma: float, k: int) -> float:
    """E‖x − x*‖² in the stationary regime of x ← x − γ(ĝ_S(x) + τQ(x − μ)), S drawn uniformly (one angle
    per stratum, weight n/k). With e = x − x*, K_S = I − γH_S and ξ_S = ĝ_S(x*) + τQ(x* − μ) (mean 0,
    because the estimate is unbiased and x* is the full fixed point): e ← K_S e − γξ_S, S independent of
    e, so the covariance P solves P = E[K_S P K_Sᵀ] + γ²E[ξ_S ξ_Sᵀ] (the cross terms vanish as E[e] = 0).
    Solved exactly (vec(P) = (I − E[K_S ⊗ K_S])⁻¹ vec(γ²E[ξξᵀ])) over all 3⁴ = 81 draws."""
    s, d = N_ANGLES // k, p.d
    draws = list(itertools.product(*[range(i * s, (i + 1) * s) for i in range(k)]))
    Ks, xis = [], []
    for draw in draws:
        MS, yS = p.M[rows(draw)], p.y.flatten()[rows(draw)]
        Ks.append(torch.eye(d, dtype=F64) - gamma * ((N_ANGLES / k) * MS.T @ MS + p.tau * p.Q))
        xis.append((N_ANGLES / k) * MS.T @ (MS @ p.x_star - yS) + p.tau * p.Q @ (p.x_star - p.mean))
    K, xi = torch.stack(Ks), torch.stack(xis)
    kron = torch.einsum("nij,nkl->ikjl", K, K).reshape(d * d, d * d) / len(draws)   # E[K_S ⊗ K_S]
    noise = gamma**2 * xi.T @ xi / len(draws)
    P = torch.linalg.solve(torch.eye(d * d, dtype=F64) - kron, noise.reshape(-1)).reshape(d, d)
    return float(torch.trace(P))


def test_full_gradient_red_reaches_the_exact_fixed_point(gaussian_ct):
    p = gaussian_ct
    out = RED(iters=300, method="nesterov", tau=p.tau, sigma_den=p.sigma)(p.y, p.A, p.prior).x
    assert torch.allclose(out.flatten(), p.x_star, atol=1e-8)


def test_oder_fluctuates_around_the_red_fixed_point_at_the_predicted_level(gaussian_ct):
    """ODER's iterates (gd, constant step) settle at exactly the predicted mean-square distance from
    the full-gradient RED fixed point, and that noise floor shrinks like γ: the small-step limit is the
    RED fixed point. Started at x* (no transient); the mean of ‖x_k − x*‖² over the last 90% of the
    iterations estimates the floor. Tolerance: the error decorrelates in ~1/(2γμ) ≈ 8 (γ = 0.5/L) and
    ≈ 30 (γ = 0.125/L) iterations, so each run averages ≥ 30 independent blocks; the estimate's relative
    sd is then ≲ √(2/30) ≈ 0.26 (8 seeds measured: ratios 0.83–1.33). [0.6, 1.6] is > 1.5 sd either side,
    and a biased gradient would miss by orders of magnitude (checked below)."""
    p = gaussian_ct
    lipschitz = float(torch.linalg.eigvalsh(p.H).max())
    mse = {}
    for scale, iters in ((0.5, 500), (0.125, 1000)):
        gamma, errs = scale / lipschitz, []
        cb = lambda k, x, info: errs.append(float((x.flatten() - p.x_star).pow(2).sum())) if k >= iters // 10 else None
        RED(iters=iters, method="gd", tau=p.tau, sigma_den=p.sigma, gamma=gamma, minibatch=4)(
            p.y, p.A, p.prior, x_init=p.x_star.reshape(1, 1, N, N), generator=torch.Generator().manual_seed(3),
            callback=cb)
        mse[scale] = sum(errs) / len(errs)
        predicted = stationary_mse(p, gamma, 4)
        assert 0.6 < mse[scale] / predicted < 1.6, (scale, mse[scale], predicted)
    assert mse[0.125] < 0.5 * mse[0.5]                       # the floor falls with the step (∝ γ)
    assert math.sqrt(mse[0.125]) < 0.02 * float(p.x_star.norm())
    # the check has power: a biased estimate (weight 1 instead of n/k = 3, a third of the data term) has
    # another fixed point, whose squared distance alone would put the ratio above 1.6 many times over
    biased = torch.linalg.solve(p.M.T @ p.M / 3 + p.tau * p.Q, p.M.T @ p.y.flatten() / 3 + p.tau * p.Q @ p.mean)
    assert float((biased - p.x_star).pow(2).sum()) > 20 * mse[0.125]


def test_oder_with_nesterov_averages_to_full_red(gaussian_ct):
    """The estimate is affine in x with coefficients drawn independently of the iterate, so the mean
    over draws of ODER's k-th Nesterov iterate is exactly full RED's k-th iterate. 64 runs of 15
    steps: the mean must lie within 4 standard errors (per pixel, worst of 36) of full RED."""
    p = gaussian_ct
    kwargs = dict(iters=15, method="nesterov", tau=p.tau, sigma_den=p.sigma, gamma=0.5 / float(p.H.norm(2)))
    full = RED(**kwargs)(p.y, p.A, p.prior).x
    runs = torch.stack([RED(**kwargs, minibatch=1 / 3)(p.y, p.A, p.prior, generator=torch.Generator().manual_seed(s)).x
                        for s in range(64)])
    se = runs.std(0) / math.sqrt(runs.shape[0])
    assert float(((runs.mean(0) - full).abs() / se).max()) < 4
    assert float(runs.std(0).max()) > 1e-4                  # the runs do differ: the draws are random


def test_minibatch_of_all_angles_is_full_red(gaussian_ct):
    p = gaussian_ct
    kwargs = dict(iters=20, method="nesterov", tau=p.tau, sigma_den=p.sigma)
    full = RED(**kwargs)(p.y, p.A, p.prior).x
    assert torch.allclose(RED(**kwargs, minibatch=1.0)(p.y, p.A, p.prior).x, full, atol=1e-12)


def test_same_seed_same_result_and_clipping(gaussian_ct):
    p = gaussian_ct
    solver = RED(iters=10, method="nesterov", tau=p.tau, sigma_den=p.sigma, minibatch=1 / 3, nonnegative=True)
    run = lambda seed: solver(p.y - 3.0, p.A, p.prior, generator=torch.Generator().manual_seed(seed)).x
    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) == 0.0                              # shifted data push pixels below 0: clipped


def test_minibatch_needs_the_capability_and_a_gradient_method(gaussian_ct):
    p = gaussian_ct
    A = MatrixOp(p.M, (1, N, N), 0.1)
    with pytest.raises(ConfigError, match="stochastic_grad"):
        RED(iters=2, minibatch=1 / 3)(p.y.flatten(1), A, p.prior)
    with pytest.raises(ConfigError, match="fixed_point"):
        RED(iters=2, method="fixed_point", minibatch=1 / 3)(p.y, p.A, p.prior)
    with pytest.raises(ConfigError):
        RED(iters=2, minibatch=-1)(p.y, p.A, p.prior)


def test_oder_config_is_red_with_a_third_of_the_angles():
    solver = build(OmegaConf.load(CONF / "solver" / "oder.yaml"))
    assert isinstance(solver, RED) and solver.method == "nesterov" and solver.nonnegative
    assert Radon.parallel_beam((1, 8, 8), n_angles=90).draw_angles(solver.minibatch)[0].numel() == 30
