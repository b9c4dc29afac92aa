"""BC-PnP blind deblurring (invlab/solvers/bcpnp.py) and its kernel data (invlab/data/kernels.py), against
independent computations: autograd of the data term through a convolution written with torch.roll, a
loop-and-sort simplex projection, PnP-PGD for the image block, and exact kernel recovery on a noiseless
problem with the image held fixed."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from invlab.data.kernels import KernelSet, anisotropic_gaussian, peak_normalize
from invlab.engine.module import parameter_error
from invlab.errors import ConfigError
from invlab.ops.blur import Blur
from invlab.ops.kernels import gaussian_kernel, motion_kernel
from invlab.priors.base import Prior
from invlab.priors.checkpoint import PACKAGE_DIR
from invlab.priors.tv import TVPrior
from invlab.solvers.bcpnp import BCPnP, convolve, kernel_grad, kernel_lipschitz, project_simplex
from invlab.solvers.pnp_pgd import PnPPGD


def roll_conv(k: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(k⊛x)[n] = Σ_m k[m] x[n − m], periodic, taps centred at (kh // 2, kw // 2): a sum of shifted copies."""
    kh, kw = k.shape[-2:]
    out = torch.zeros_like(x)
    for i in range(kh):
        for j in range(kw):
            out = out + k[:, :, i:i + 1, j:j + 1] * torch.roll(x, (i - kh // 2, j - kw // 2), dims=(-2, -1))
    return out


class Identity(Prior):
    """D(x, σ) = x: the projected-gradient kernel update with no kernel prior."""

    def _denoise(self, x, sigma):
        return x.clone()


class Guarded(Blur):
    """A blur whose kernel (and so its forward, adjoint, grad) raises: what a blind solver must never touch."""

    def __init__(self, in_shape, kernel):
        super().__init__(in_shape, kernel)
        self.armed = True

    def __getattr__(self, name):
        if name == "kernel" and self.__dict__.get("armed"):
            raise AssertionError("the blind solver read the true operator's kernel")
        return super().__getattr__(name)


def smooth_images(b: int, c: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, c, n // 4, n // 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(n, n), mode="bilinear", align_corners=False)


# ---- the pieces ----------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 3])
def test_kernel_gradient_is_autograd_of_the_data_term(channels):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, channels, 12, 10, generator=g, dtype=torch.float64)
    y = torch.rand(2, channels, 12, 10, generator=g, dtype=torch.float64)
    k = torch.rand(2, 1, 5, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    (0.5 * (roll_conv(k, x) - y).pow(2).sum()).backward()
    with torch.no_grad():
        assert torch.allclose(convolve(k, x), roll_conv(k, x), atol=1e-12)
        assert torch.allclose(convolve(k, x), Blur(tuple(x.shape[1:]), k)(x), atol=1e-12)
        ours = kernel_grad(x, convolve(k, x) - y, 5, 4)
    assert ours.shape == k.shape
    assert torch.allclose(ours, k.grad, atol=1e-10)


def simplex_reference(v: np.ndarray) -> np.ndarray:
    """Held–Wolfe–Crowder by hand: sort decreasingly, walk until the running threshold stops decreasing."""
    u = sorted(v.tolist(), reverse=True)
    total, tau = 0.0, None
    for j, uj in enumerate(u, start=1):
        total += uj
        t = (total - 1.0) / j
        if uj - t > 0:
            tau = t
    return np.maximum(v - tau, 0.0)


def test_simplex_projection_is_exact():
    g = torch.Generator().manual_seed(2)
    v = torch.cat([torch.randn(6, 1, 4, 5, generator=g, dtype=torch.float64) * s for s in (0.01, 1.0, 30.0)])
    v[0] = -5.0  # all negative: the projection is uniform
    v[1] = torch.rand(1, 4, 5, generator=g, dtype=torch.float64)
    v[1] /= v[1].sum()  # already on the simplex: unchanged
    p = project_simplex(v)
    for b in range(v.shape[0]):
        ref = simplex_reference(v[b].flatten().numpy())
        np.testing.assert_allclose(p[b].flatten().numpy(), ref, atol=1e-12)
    assert torch.allclose(p.flatten(1).sum(1), torch.ones(v.shape[0], dtype=v.dtype)) and (p >= 0).all()
    assert torch.allclose(p[0], torch.full_like(p[0], 1 / 20))
    assert torch.allclose(p[1], v[1])
    # optimality: no random point of the simplex is closer to v
    z = torch.rand(200, 20, generator=g, dtype=torch.float64)
    z = z / z.sum(1, keepdim=True)
    for b in range(v.shape[0]):
        dist = (p[b].flatten() - v[b].flatten()).norm()
        assert bool(((z - v[b].flatten()).norm(dim=1) >= dist - 1e-12).all())
    assert torch.allclose(project_simplex(v + 3.0), p, atol=1e-12)  # shift invariance, used by the k-step


def test_kernel_lipschitz_is_the_top_eigenvalue_on_zero_sum_kernels():
    x = smooth_images(1, 1, 16, seed=3).double()
    kh = kw = 3
    basis = torch.eye(kh * kw, dtype=torch.float64).reshape(-1, 1, kh, kw)
    cols = torch.stack([kernel_grad(x, convolve(e[None], x), kh, kw).flatten() for e in basis], 1)
    proj = torch.eye(kh * kw, dtype=torch.float64) - 1.0 / (kh * kw)
    top = torch.linalg.eigvalsh(proj @ cols @ proj)[-1]
    assert float(kernel_lipschitz(x, kh, kw, iters=200)[0]) == pytest.approx(float(top), rel=1e-6)


# ---- the blocks ----------------------------------------------------------------------------------

def blur_problem(kernel: torch.Tensor, n: int = 24, sigma_y: float = 0.02, seed: int = 0):
    x = smooth_images(2, 1, n, seed)
    A = Blur((1, n, n), kernel)
    g = torch.Generator().manual_seed(seed + 1)
    y = A(x) + sigma_y * torch.randn(x.shape, generator=g)
    return x, A, y


def test_oracle_image_block_is_pnp_pgd():
    _, A, y = blur_problem(motion_kernel(7, 0.5, torch.Generator().manual_seed(0)))
    prior = TVPrior(iters=5)
    ours = BCPnP(mode="oracle", iters=6, gamma_x=0.9, alpha_x=1.0, sigma_x=0.03)(y, A, prior)
    ref = PnPPGD(iters=6, gamma=0.9, sigma_den=0.03)(y, A, prior)
    assert torch.allclose(ours.x, ref.x, atol=1e-6) and ours.nfe == ref.nfe == 6
    assert torch.equal(ours.estimates["kernel"], A.kernel)


def test_fixed_kernel_is_pnp_pgd_with_that_kernel():
    _, A, y = blur_problem(gaussian_kernel(7, 2.0))
    prior = TVPrior(iters=5)
    ours = BCPnP(mode="fixed", iters=5, kernel_size=7, kernel_init_std=1.2, sigma_x=0.03)(y, Guarded((1, 24, 24),
                                                                                             A.kernel), prior)
    ref = PnPPGD(iters=5, gamma=1.0, sigma_den=0.03)(y, Blur((1, 24, 24), gaussian_kernel(7, 1.2)), prior)
    assert torch.allclose(ours.x, ref.x, atol=1e-6)
    assert torch.allclose(ours.estimates["kernel"][0, 0], gaussian_kernel(7, 1.2))


@pytest.mark.parametrize("kernel_prior", [None, Identity()], ids=["no-prior", "identity-prior"])
def test_kernel_block_alone_recovers_the_true_kernel(kernel_prior):
    """Noiseless y = k⊛x with the sharp x known: the k-block is projected gradient descent on a strongly
    convex problem (a random image makes every tap identifiable), so it converges to k itself."""
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 1, 32, 32, generator=g)
    truth = torch.stack([motion_kernel(7, 0.6, g), anisotropic_gaussian(7, 1.5, 0.7, 0.4)])[:, None]
    y = convolve(truth, x)
    solver = BCPnP(kernel_size=7, kernel_prior=kernel_prior, alpha_k=0.5)
    k = solver.initial_kernel(x).expand(2, 1, 7, 7)
    lipschitz = kernel_lipschitz(x, 7, 7, iters=50)  # x is fixed, so L_k is too
    first = None
    for _ in range(150):
        k = solver.kernel_step(x, y, k, kernel_prior, lipschitz)
        first = (k - truth).norm() if first is None else first
        assert bool((k >= 0).all()) and torch.allclose(k.flatten(1).sum(1), torch.ones(2))
    assert float((k - truth).norm() / truth.norm()) < 1e-4 < float(first / truth.norm())


def test_blind_solver_never_reads_the_true_kernel():
    x, A, y = blur_problem(gaussian_kernel(7, 1.5))
    guarded = Guarded((1, 24, 24), A.kernel)
    prior = TVPrior(iters=5)
    with pytest.raises(AssertionError, match="kernel"):  # the guard works: the oracle reads it
        BCPnP(mode="oracle", iters=2)(y, guarded, prior)
    res = BCPnP(mode="blind", iters=10, kernel_size=7, kernel_prior=None)(y, guarded, prior)
    assert res.x.shape == x.shape and torch.isfinite(res.x).all()
    k = res.estimates["kernel"]
    assert k.shape == (2, 1, 7, 7) and torch.allclose(k.flatten(1).sum(1), torch.ones(2)) and (k >= 0).all()
    assert len(res.trace["kernel_change"]) == 10 and res.trace["kernel_change"][0] > 0


def test_blind_refuses_measurements_that_are_not_blurred_images():
    from invlab.ops.resample import SuperResolution

    x = smooth_images(2, 1, 24)
    A = SuperResolution((1, 24, 24), gaussian_kernel(5, 1.0), 2)
    y = A(x)
    for mode in ("blind", "fixed"):
        with pytest.raises(ConfigError, match="real image-shaped measurements"):
            BCPnP(mode=mode, iters=2, kernel_prior=None)(y, A, TVPrior(iters=2))
    res = BCPnP(mode="oracle", iters=2, gamma_x=0.5)(y, A, TVPrior(iters=2))  # plain PnP runs on any operator
    assert res.x.shape == x.shape and torch.isfinite(res.x).all()


def test_settings_are_checked():
    _, A, y = blur_problem(gaussian_kernel(7, 1.5))
    with pytest.raises(ConfigError, match="mode"):
        BCPnP(mode="semi")(y, A, TVPrior(iters=2))
    with pytest.raises(ConfigError, match="kernel_fidelity"):
        BCPnP(kernel_fidelity="edges", kernel_prior=None, iters=1)(y, A, TVPrior(iters=2))
    with pytest.raises(ConfigError, match="kernel_init"):
        BCPnP(kernel_init="box", kernel_prior=None, iters=1)(y, A, TVPrior(iters=2))


def test_parameter_error_is_relative_l2_per_sample():
    truth = torch.stack([gaussian_kernel(5, 1.0), gaussian_kernel(5, 2.0)])[:, None]
    est = truth.clone()
    est[1] = gaussian_kernel(5, 1.0)
    errs = parameter_error(est, truth, 2)
    assert errs[0] == 0.0
    assert errs[1] == pytest.approx(float((truth[1] - truth[0]).norm() / truth[1].norm()), rel=1e-6)
    assert all(math.isnan(e) for e in parameter_error(torch.zeros(2, 1, 3, 3), truth, 2))  # sizes differ
    assert all(math.isnan(e) for e in parameter_error(est, None, 2))


# ---- the kernel data and the shipped kernel denoiser ------------------------------------------------

def test_kernel_dataset_items():
    ds = KernelSet(size=15, length=40, seed=3)
    for i in range(len(ds)):
        k = ds.kernel(i)
        assert k.shape == (15, 15) and (k >= 0).all() and float(k.sum()) == pytest.approx(1.0, abs=1e-5)
        x = ds[i]["x"]
        assert x.shape == (1, 15, 15) and float(x.max()) == 1.0 and torch.allclose(x[0] * k.max(), k)
    assert torch.equal(ds[7]["x"], KernelSet(size=15, length=40, seed=3)[7]["x"])  # seeded
    other = KernelSet(size=15, length=40, seed=3)
    other.set_epoch(1)
    assert not torch.equal(ds[7]["x"], other[7]["x"])  # fresh kernels every epoch
    assert len(KernelSet(length=40, limit=5)) == 5


def test_anisotropic_gaussian_matches_the_isotropic_one():
    assert torch.allclose(anisotropic_gaussian(9, 1.7, 1.7, 0.8), gaussian_kernel(9, 1.7), atol=1e-7)
    k = anisotropic_gaussian(11, 3.0, 1.0, math.pi / 2)  # rotated a quarter turn: long axis vertical
    assert torch.allclose(k, anisotropic_gaussian(11, 1.0, 3.0, 0.0), atol=1e-7)
    assert float(k[:, 5].sum()) > float(k[5, :].sum())


@pytest.mark.skipif(not (PACKAGE_DIR / "dncnn_kernel.safetensors").is_file(), reason="not trained yet")
def test_shipped_kernel_denoiser_denoises_kernels():
    from invlab.priors.learned import LearnedDenoiser

    prior = LearnedDenoiser("dncnn_kernel")
    ds = KernelSet(size=25, length=16, seed=99)
    x = torch.stack([ds[i]["x"] for i in range(len(ds))])
    sigma = 25 / 255
    noisy = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = prior.denoise(noisy, sigma)
    assert float((out - x).pow(2).mean()) < 0.1 * float((noisy - x).pow(2).mean())
    k, peak = peak_normalize(torch.stack([ds.kernel(i) for i in range(4)]))
    assert torch.allclose(peak.flatten(), torch.stack([ds.kernel(i).max() for i in range(4)]))
