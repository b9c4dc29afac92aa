"""PnP-DM and DOLPH against exact Gaussian priors (invlab.analysis.exact.GaussianEps: Tweedie-exact ε-network).

PnP-DM: prior N(μ, Σ) on 1×4×4 images (d = 16), y = A x + σ_y n with a dense 8×16 A (σ_y = 0.05). At a fixed
coupling ρ (model scale) the Gibbs chain's x-marginal is the posterior under noise covariance
σ_y²I + (ρ/2)²AAᵀ (image units) — the exact target the tests compare with, as the DPnP test does; a final
ρ_min = 0.05 keeps it within 0.2 of the prior-to-posterior shift of p(x | y). Tolerances as in
tests/test_diffusion_samplers.py: mean max|z| < 4.5 (16 coordinates, Bonferroni, p > 0.999), covariance
trace ratio and relative Frobenius error against the Wishart MC floor √((tr C)² + ‖C‖²)/(√N ‖C‖).

DOLPH: its data-consistency gradient against closed forms, and its effect (lower residual than plain DDPM)
on Fourier phase retrieval of 1×8×8 images drawn from a smooth Gaussian prior.
"""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from invlab.errors import ConfigError
from invlab.ops.base import LinearOperator
from invlab.ops.phase import FourierPhaseRetrieval
from invlab.priors.diffusion import DiffusionPrior
from invlab.priors.gaussian import stationary_gaussian
from invlab.priors.schedule import DDPMSchedule
from invlab.solvers.dolph import DOLPH, data_gradient, step_size
from invlab.solvers.pnp_dm import PnPDM, rho_schedule

from invlab.analysis.exact import (PNP_DM_CHECK, GaussianEps, MatrixOp, gaussian_posterior,
                                   linear_gaussian_problem, stats)

F64 = torch.float64
SHAPE, D, M, SIGMA_Y = (1, 4, 4), 16, 8, 0.05


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(10)
    return linear_gaussian_problem(g, g, SHAPE, M, SIGMA_Y)


# ---- PnP-DM: the exact likelihood step ------------------------------------------------------------------

class ComplexMatrixOp(LinearOperator):
    """A x = M·vec(x) with a complex (m, d) M on real images; adjoint Re(Mᴴ y) (real inner product)."""

    def __init__(self, matrix, shape, sigma_y):
        super().__init__(shape)
        self.register_buffer("matrix", matrix)
        self.noise = SimpleNamespace(sigma=sigma_y)

    def forward(self, x):
        return x.flatten(1).to(self.matrix.dtype) @ self.matrix.T

    def adjoint(self, y):
        return (y @ self.matrix.conj()).real.reshape(-1, *self.in_shape)


@pytest.mark.parametrize("measure", ["real", "complex"])
def test_exact_likelihood_step_draws_the_gaussian_conditional(problem, measure):
    """Perturb-and-MAP z ~ p(z | x, y) ∝ exp(−‖y − Az‖²/(2σ²) − ‖z − x‖²/(2r²)), r = ρ/2: precision
    P = Re(AᴴA)/σ² + I/r², mean P⁻¹(Re(Aᴴy)/σ² + x/r²) in image units. Complex measurements must get
    N(0, 1) real and imaginary noise parts. Measured (N = 20000): real max|z| 1.59, trace ratio 0.993, rel cov
    err 0.025 (floor 0.024); complex 1.12 / 0.994 / 0.025 (floor 0.021); with torch.randn's complex normal
    (variance ½ per part) the trace ratio drops to 0.82 and the rel error to 0.15: both checks fail."""
    n, rho, sigma = 20000, 0.3, 0.05
    g = torch.Generator().manual_seed(1)
    mat = problem.mat
    if measure == "complex":
        mat = torch.complex(mat, torch.randn(M, D, generator=g, dtype=F64) / math.sqrt(D))
        A = ComplexMatrixOp(mat, SHAPE, sigma)
    else:
        A = MatrixOp(mat, SHAPE, sigma)
    x = problem.gp.sample(1, g, dtype=F64)
    y = A(x) + 0.1 * torch.randn(1, M, generator=g, dtype=F64)
    r = rho / 2
    prec = (mat.conj().T @ mat).real / sigma**2 + torch.eye(D, dtype=F64) / r**2
    cov = torch.linalg.inv(prec)
    mean = cov @ ((mat.conj().T @ y.reshape(-1)).real / sigma**2 + x.reshape(-1) / r**2)
    z = PnPDM.exact_step(2 * x.expand(n, *SHAPE) - 1, y.expand(n, -1), A, torch.full((n,), sigma, dtype=F64),
                         rho, torch.Generator().manual_seed(2))
    zmax, trace, rel, floor = stats((z + 1) / 2, mean, cov)
    assert zmax < 4.5 and 0.97 < trace < 1.03 and rel < 2 * floor, (zmax, trace, rel, floor)


# ---- PnP-DM: the whole Gibbs sampler --------------------------------------------------------------------

PNP_DM_TEST = PNP_DM_CHECK


@pytest.mark.parametrize("step", ["exact", "langevin"])
def test_pnp_dm_samples_the_smoothed_posterior(problem, step):
    """ρ: 1 → 0.05 by 0.8 per iteration (reached at k = 14), then 46 more iterations there. Measured (N = 1000):
    exact max|z| 2.29, trace ratio 0.93, rel cov err 0.13 (MC floor 0.09), mean 0.08 of the prior-to-posterior
    shift from p(x | y); langevin (50 steps per likelihood step) 3.19 / 0.96 / 0.09, 0.08. With 40
    iterations (decay 0.85, 100 Langevin steps) the Langevin chain had not mixed: max|z| 5.0."""
    n, mat = 1000, problem.mat
    res = PnPDM(likelihood_step=step, **PNP_DM_TEST)(problem.y.expand(n, -1).contiguous(), problem.A,
                                                     problem.prior, generator=torch.Generator().manual_seed(5))
    assert res.nfe == 60 * 50 and len(res.trace["rho"]) == 60 and res.trace["rho"][-1] == 0.05
    mean, cov = gaussian_posterior(problem.gp, mat, problem.y, SIGMA_Y**2 * torch.eye(M, dtype=F64)
                                   + (0.05 / 2) ** 2 * mat @ mat.T)
    zmax, trace, rel, floor = stats(res.x, mean, cov)
    assert zmax < 4.5 and 0.9 < trace < 1.1 and rel < 2 * floor + 0.05, (zmax, trace, rel, floor)
    m = res.x.reshape(n, -1).mean(0)
    assert float((m - problem.post_mean).norm()) < 0.2 * problem.shift


def test_pnp_dm_average_and_schedule(problem):
    """ρ_k = max(ρ_min, ρ_0 decay^k); average_last = n returns the mean of the last n iterates x_k (as the
    callback sees them), and n = 1 the last one."""
    assert rho_schedule(10.0, 0.9, 0.3, 40)[:2] == [10.0, 9.0] and rho_schedule(10.0, 0.9, 0.3, 40)[-1] == 0.3
    kw = dict(PNP_DM_TEST, iters=8, dds_steps=5)
    for n in (1, 3):
        seen = []
        res = PnPDM(**kw, average_last=n)(problem.y.expand(4, -1).contiguous(), problem.A, problem.prior,
                                           generator=torch.Generator().manual_seed(1),
                                           callback=lambda k, x, info: seen.append(x))
        assert len(seen) == 8 and torch.allclose(res.x, torch.stack(seen[-n:]).mean(0), atol=1e-12)


def test_pnp_dm_refuses_bad_settings(problem):
    phase = FourierPhaseRetrieval(SHAPE)
    phase.noise = SimpleNamespace(sigma=0.05)
    with pytest.raises(ConfigError, match="exact likelihood step needs a linear operator"):
        PnPDM(likelihood_step="exact")(phase(problem.gp.sample(1, dtype=F64)), phase, problem.prior)
    for bad in (dict(likelihood_step="mala"), dict(average_last=0), dict(rho_min=0.0), dict(decay=1.5)):
        with pytest.raises(ConfigError):
            PnPDM(**bad)(problem.y, problem.A, problem.prior)


# ---- DOLPH ----------------------------------------------------------------------------------------------

def test_dolph_gradient_matches_closed_forms():
    """For y = |F pad(x)| (orthonormal centred FFT) the gradient of ½‖y − |F pad x|‖² is
    x − Re crop F⁻¹(y · Fx/|Fx|) (Parseval); also checked against torch.func.grad of a hand-written g.
    DOLPH's data_gradient takes the model-scale point z and differentiates in image units x = (z + 1)/2."""
    g = torch.Generator().manual_seed(0)
    A = FourierPhaseRetrieval((1, 8, 8))
    x = torch.rand((3, 1, 8, 8), generator=g, dtype=F64)
    y = A(torch.rand((3, 1, 8, 8), generator=g, dtype=F64)) + 0.05 * torch.randn((3, 1, 12, 12), generator=g,
                                                                                   dtype=F64)
    ours = data_gradient(A, y, 2 * x - 1)

    def fourier(u):
        dims = (-2, -1)
        padded = torch.nn.functional.pad(u, (2, 2, 2, 2))
        return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(padded, dim=dims), norm="ortho"), dim=dims)

    k = fourier(x)
    back = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(y * k / k.abs(), dim=(-2, -1)), norm="ortho"),
                              dim=(-2, -1))
    assert torch.allclose(ours, x - back.real[..., 2:10, 2:10], atol=1e-10)
    auto = torch.func.grad(lambda u: 0.5 * (y - fourier(u).abs()).pow(2).sum())(x)
    assert torch.allclose(ours, auto, atol=1e-10)
    assert step_size(0.5, "alpha_bar", 0.2) == 0.1 and step_size(0.5, "noise", 0.2) == 0.4


@pytest.fixture(scope="module")
def phase_problem():
    gp = stationary_gaussian((1, 8, 8), mean=0.5, std=0.2, length=1.5)
    sched = DDPMSchedule()
    prior = DiffusionPrior(net=GaussianEps(gp, sched), schedule=sched, image_size=(8, 8))
    A = FourierPhaseRetrieval((1, 8, 8))
    A.noise = SimpleNamespace(sigma=0.01)
    g = torch.Generator().manual_seed(3)
    x = gp.sample(1, g, dtype=F64)
    y = A(x) + 0.01 * torch.randn((1, 1, 12, 12), generator=g, dtype=F64)
    return SimpleNamespace(gp=gp, prior=prior, A=A, x=x, y=y)


def test_dolph_without_correction_is_ddpm(problem):
    """γ = 0: plain DDPM ancestral sampling (all T = 1000 steps) samples the prior N(μ, Σ) (d = 16).
    Measured (N = 2000): max|z| 1.67, trace ratio 0.97, rel cov err 0.077 (floor 0.070)."""
    n, gp = 2000, problem.gp
    res = DOLPH(gamma=0.0, clip_x0=False, clip=False)(problem.y.expand(n, -1).contiguous(), problem.A,
                                                       problem.prior, generator=torch.Generator().manual_seed(0))
    assert res.nfe == 1000 and len(res.trace["gamma"]) == 1000
    zmax, trace, rel, floor = stats(res.x, gp.mean.reshape(-1), gp.cov)
    assert zmax < 4.5 and 0.95 < trace < 1.05 and rel < 2 * floor + 0.03, (zmax, trace, rel, floor)


@pytest.mark.parametrize("at", ["xt", "x0"])
def test_dolph_correction_lowers_the_residual(phase_problem, at):
    """Against plain DDPM (γ = 0) on the same seeds, the correction cuts ‖y − |Ax|‖. Measured (N = 200, 100
    steps, γ = 0.5, alpha_bar rule): plain 1.39 (the noise alone: 0.12); xt 0.19, x0 0.19."""
    n, A, y = 200, phase_problem.A, phase_problem.y
    ys = y.expand(n, -1, -1, -1).contiguous()

    def resid(gamma):
        res = DOLPH(steps=100, gamma=gamma, at=at)(ys, A, phase_problem.prior,
                                                   generator=torch.Generator().manual_seed(1))
        return float((ys - A(res.x)).flatten(1).norm(dim=1).mean())

    plain, corrected = resid(0.0), resid(0.5)
    assert corrected < 0.3 * plain, (corrected, plain)


def test_dolph_refuses_bad_settings(phase_problem):
    for bad in (dict(gamma=-1.0), dict(gamma_rule="linear"), dict(at="x1")):
        with pytest.raises(ConfigError):
            DOLPH(steps=5, **bad)(phase_problem.y, phase_problem.A, phase_problem.prior)
    with pytest.raises(ConfigError, match="needs a diffusion prior"):
        DOLPH(steps=5)(phase_problem.y, phase_problem.A, phase_problem.gp)


# ---- configs ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,cls", [("pnp_dm", "PnPDM"), ("dolph", "DOLPH")])
def test_configs_select_the_mnist_diffusion_prior(name, cls):
    from hydra import compose, initialize_config_dir

    from invlab.utils.config import build

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("config", overrides=[f"solver={name}", "task=phase_retrieval"])
    assert cfg.prior.name == "ddpm_mnist" and cfg.data.name == "mnist_test8"
    solver = build(cfg.solver)
    assert solver.name == name and type(solver).__name__ == cls
