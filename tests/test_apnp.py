"""APnP (invlab/solvers/apnp.py, methods.md B): the gradient operator, the exact data step, and the fixed
points of both splittings against independent computations (dense linear algebra, a numpy primal–dual
solver of anisotropic TV)."""
import numpy as np
import pytest
import torch

from invlab.analysis.exact import F64, MatrixOp
from invlab.data.gradients import Gradients, gray_train_grad
from invlab.errors import ConfigError
from invlab.ops.blur import Blur
from invlab.ops.gradient import grad, grad_adjoint, gram, gram_symbol, symbols
from invlab.ops.noise import Gaussian
from invlab.ops.resample import SuperResolution
from invlab.priors.base import Prior
from invlab.solvers.apnp import APnP, solve_x
from invlab.solvers.pnp_hqs import PnPHQS

H, W = 8, 12


class SoftThreshold(Prior):
    """prox of t‖·‖₁ with t = weight·σ: the exact proximal map TV-by-ADMM uses (anisotropic TV)."""

    def __init__(self, weight: float, channels: int = 2):
        super().__init__()
        self.weight, self.channels = weight, channels

    def _denoise(self, x, sigma):
        t = self.weight * sigma.view(-1, 1, 1, 1)
        return x.sign() * (x.abs() - t).clamp_min(0)


class WhiteGaussian(Prior):
    """The exact MMSE denoiser of z ~ N(0, s²I): G(v) = s²/(s² + σ²)·v."""

    channels = 2

    def __init__(self, s: float):
        super().__init__()
        self.s2 = s * s

    def _denoise(self, x, sigma):
        return self.s2 / (self.s2 + sigma.view(-1, 1, 1, 1) ** 2) * x


def dense_grad(h: int, w: int) -> np.ndarray:
    """D as a (2hw, hw) matrix built from np.roll (independent of invlab.ops.gradient): rows h-diffs, v-diffs."""
    eye = np.eye(h * w).reshape(h * w, h, w)
    dh = (np.roll(eye, -1, axis=2) - eye).reshape(h * w, -1).T
    dv = (np.roll(eye, -1, axis=1) - eye).reshape(h * w, -1).T
    return np.concatenate([dh, dv])


def dense(op, n_in: tuple[int, ...]) -> torch.Tensor:
    """The matrix of a linear map on (1, *n_in) tensors, columns = images of basis vectors."""
    n = int(np.prod(n_in))
    basis = torch.eye(n, dtype=F64).reshape(n, *n_in)
    return torch.stack([op(b[None]).flatten() for b in basis], dim=1)


def operators():
    torch.manual_seed(0)
    blur = Blur.gaussian((1, H, W), kernel_size=5, kernel_std=1.0).double()
    sr2 = SuperResolution.gaussian((1, H, W), scale=2, kernel_size=5, kernel_std=1.0).double()
    sr4 = SuperResolution.gaussian((1, H, W), scale=4, kernel_size=5, kernel_std=1.5).double()
    mat = MatrixOp(torch.randn(40, H * W, dtype=F64) / 10, (1, H, W), 0.0)  # no FFT structure: CG
    return {"blur": blur, "sr2": sr2, "sr4": sr4, "matrix": mat}


def test_grad_adjoint_and_fourier_symbols():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, H, W, generator=g, dtype=F64)
    z = torch.randn(2, 6, H, W, generator=g, dtype=F64)
    assert torch.allclose((grad(x) * z).sum(), (x * grad_adjoint(z)).sum(), atol=1e-12, rtol=0)
    # per image channel: (h, v) of channel c at 2c, 2c + 1, equal to the dense np.roll differences
    d = torch.as_tensor(dense_grad(H, W))
    for c in range(3):
        ref = (d @ x[0, c].flatten()).reshape(2, H, W)
        assert torch.allclose(grad(x)[0, 2 * c:2 * c + 2], ref, atol=1e-12)
    dh, dv = symbols(H, W, F64)
    spec = torch.fft.fft2(x)
    assert torch.allclose(torch.fft.ifft2(spec * dh).real, grad(x)[:, 0::2], atol=1e-12)
    assert torch.allclose(torch.fft.ifft2(spec * dv).real, grad(x)[:, 1::2], atol=1e-12)
    assert torch.allclose(torch.fft.ifft2(spec * gram_symbol(H, W, F64)).real, gram(x), atol=1e-12)
    assert torch.allclose(gram_symbol(H, W, F64), dh.abs() ** 2 + dv.abs() ** 2, atol=1e-12)


def test_gradient_dataset_is_wrap_free_differences_of_the_crop():
    ds = gray_train_grad(patch_size=16, length=4)
    inner = ds.dataset[2]["x"][0].numpy()                      # the 17×17 crop
    z = ds[2]["x"].numpy()
    assert z.shape == (2, 16, 16)
    np.testing.assert_allclose(z[0], np.diff(inner, axis=1)[:16, :], atol=1e-7)
    np.testing.assert_allclose(z[1], np.diff(inner, axis=0)[:, :16], atol=1e-7)
    assert hasattr(ds, "set_epoch")
    ds.set_epoch(1)
    assert not np.allclose(ds[2]["x"].numpy(), z)              # fresh crops per epoch
    assert not hasattr(Gradients([{"x": torch.zeros(1, 4, 4)}]), "set_epoch")


@pytest.mark.parametrize("name", ["blur", "sr2", "sr4", "matrix"])
def test_data_step_solves_the_linear_system(name):
    A = operators()[name]
    g = torch.Generator().manual_seed(2)
    rhs = torch.randn(2, 1, H, W, generator=g, dtype=F64)
    mu = torch.tensor([0.05, 3.0], dtype=F64)
    x = solve_x(A, rhs, mu, cg_iters=500, cg_tol=1e-13)
    normal = dense(A.normal, (1, H, W))
    lap = torch.as_tensor(dense_grad(H, W)).T @ torch.as_tensor(dense_grad(H, W))
    for b in range(2):
        ref = torch.linalg.solve(normal + mu[b] * lap, rhs[b].flatten())
        assert torch.allclose(x[b].flatten(), ref, atol=1e-9, rtol=0), name


def _tv_pdhg(A: np.ndarray, y: np.ndarray, beta: float, iters: int = 20000) -> np.ndarray:
    """argmin_x ½‖Ax − y‖² + β‖Dx‖₁ by Chambolle–Pock on dense numpy matrices (no invlab code)."""
    d = dense_grad(H, W)
    tau = sig = 0.99 / np.sqrt(8.0)   # τσ‖D‖² < 1, ‖D‖² = 8
    n = A.shape[1]
    inv = np.linalg.inv(np.eye(n) / tau + A.T @ A)
    x = xbar = np.zeros(n)
    p = np.zeros(d.shape[0])
    aty = A.T @ y
    for _ in range(iters):
        p = np.clip(p + sig * d @ xbar, -beta, beta)
        x_new = inv @ (x / tau - d.T @ p + aty)
        xbar, x = 2 * x_new - x, x_new
    return x


@pytest.mark.parametrize("name", ["blur", "sr2"])
def test_admm_with_soft_threshold_converges_to_anisotropic_tv(name):
    A = operators()[name]
    g = torch.Generator().manual_seed(3)
    x_true = (torch.rand(1, 1, H, W, generator=g, dtype=F64) > 0.5).to(F64) * 0.6 + 0.2
    A.noise = Gaussian(sigma=0.02)
    y = A(x_true) + 0.02 * torch.randn(A(x_true).shape, generator=g, dtype=F64)
    weight, sigma = 0.5, 0.05
    solver = APnP(splitting="admm", iters=400, sigma_max=sigma, sigma_min=sigma, anneal_iters=1, lam=4.0)
    sig, mu = solver.schedule(torch.tensor([0.02], dtype=F64))
    beta = float(mu[0, 0]) * weight * float(sig[0, 0])                    # μ·(prox threshold)
    x = solver(y, A, SoftThreshold(weight)).x
    ref = _tv_pdhg(dense(A, (1, H, W)).numpy(), y.flatten().numpy(), beta)
    assert np.abs(x.flatten().numpy() - ref).max() < 1e-5   # vs ~5e-3 to the solution at 1.05·β
    assert np.ptp(ref) > 0.05                                # not the constant image a large β gives
    # not the unregularised solution: TV visibly changed it
    ls = np.linalg.lstsq(dense(A, (1, H, W)).numpy(), y.flatten().numpy(), rcond=None)[0]
    assert np.abs(ls - ref).max() > 1e-2


@pytest.mark.parametrize("splitting", ["hqs", "admm"])
@pytest.mark.parametrize("name", ["blur", "sr4", "matrix"])
def test_gaussian_gradient_prior_reaches_the_closed_form_fixed_point(splitting, name):
    """G(v) = c·v with c = s²/(s²+σ²). HQS: z = cDx, so (AᵀA + μ(1−c)DᵀD)x = Aᵀy. ADMM: G = prox of
    h/μ with h(z) = μ(1−c)/(2c)‖z‖², so it solves min ½‖Ax−y‖² + h(Dx): (AᵀA + μ(1−c)/c·DᵀD)x = Aᵀy."""
    A = operators()[name]
    A.noise = Gaussian(sigma=0.05)
    g = torch.Generator().manual_seed(4)
    y = A(torch.rand(2, 1, H, W, generator=g, dtype=F64))
    s, sigma = 0.1, 0.1
    solver = APnP(splitting=splitting, iters=150, sigma_max=sigma, sigma_min=sigma, anneal_iters=1, lam=2.0,
                  cg_iters=500, cg_tol=1e-13)
    mu = float(solver.schedule(torch.tensor([0.05], dtype=F64))[1][0, 0])
    x = solver(y, A, WhiteGaussian(s), x_init=torch.zeros(2, 1, H, W, dtype=F64)).x
    c = s * s / (s * s + sigma * sigma)
    weight = mu * (1 - c) if splitting == "hqs" else mu * (1 - c) / c
    lap = torch.as_tensor(dense_grad(H, W)).T @ torch.as_tensor(dense_grad(H, W))
    mat = dense(A, (1, H, W))
    for b in range(2):
        ref = torch.linalg.solve(mat.T @ mat + weight * lap, mat.T @ y[b].flatten())
        assert torch.allclose(x[b].flatten(), ref, atol=1e-8, rtol=0), (splitting, name)


def test_schedule_is_dpir_and_fixed_when_annealing_takes_one_step():
    sy = torch.tensor([0.01, 0.05])
    apnp = APnP(iters=8, sigma_max=0.2, sigma_min=0.002, lam=0.3)
    hqs = PnPHQS(iters=8, sigma_max=0.2, sigma_min=0.002, lam=0.3)
    for a, b in zip(apnp.schedule(sy), hqs.schedule(sy)):
        assert torch.allclose(a, b)
    sig, mu = APnP(iters=5, sigma_max=0.2, anneal_iters=3, lam=0.3).schedule(sy)
    assert torch.allclose(sig[2:], sy.expand(3, 2)) and torch.allclose(mu[2:], torch.full((3, 2), 0.3))
    sig, _ = APnP(iters=4, sigma_max=0.2, sigma_min=0.1, anneal_iters=1).schedule(sy)
    assert torch.allclose(sig, torch.full((4, 2), 0.1))


def test_wrong_prior_channels_and_splitting_are_config_errors():
    A = operators()["blur"]
    A.noise = Gaussian(sigma=0.02)
    y = torch.zeros(1, 1, H, W, dtype=F64)
    with pytest.raises(ConfigError, match="2 channels.*1-channel inputs.*prior=dncnn_grad"):
        APnP()(y, A, SoftThreshold(1.0, channels=1))
    with pytest.raises(ConfigError, match="splitting"):
        APnP(splitting="pgd")(y, A, SoftThreshold(1.0))
    x3 = torch.zeros(1, 3, H, W, dtype=F64)  # colour images need a 6-channel gradient prior
    A3 = Blur.gaussian((3, H, W), kernel_size=3, kernel_std=1.0).double()
    A3.noise = Gaussian(sigma=0.02)
    with pytest.raises(ConfigError, match="6 channels"):
        APnP()(A3(x3), A3, SoftThreshold(1.0))
