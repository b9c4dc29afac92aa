"""The distribution-shift KL estimator against closed forms for Gaussian priors.

- The identity KL(p‖q) = ∫σ⁻³ E_{p_σ}‖D_p − D_q‖² dσ with the exact Gaussian integrand and our log-σ
  quadrature (+ end pieces) reproduces the closed-form Gaussian KL to 1e-6 relative.
- The Monte Carlo estimate from samples of p (clean) matches the closed-form KL within 4 standard errors.
- Measurement domain: for a FIXED mask (inpainting) or sampling pattern (MRI), ỹ is an affine map of
  (x, measurement noise), hence Gaussian with moments we get by linearising the map; the estimate from
  ỹ samples must then match the same integral evaluated exactly at those moments (4 standard errors).
  That is the exact check the method allows: ỹ is not a sample of p, so its value is not KL(p‖q).
- The measurement estimate keeps the clean KL's ranking of two shifted priors (the paper's claim).
"""
from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch

from invlab.analysis.shift import gaussian_integrand, gaussian_kl, integrate, shift_kl, sigma_grid
from invlab.ops.mask import Mask
from invlab.ops.task import image_domain, measured_images
from invlab.ops.mask import Mask
from invlab.ops.mri import SingleCoilMRI
from invlab.ops.task import Task
from invlab.priors.gaussian import GaussianPrior

F64 = torch.float64
SHAPE = (1, 4, 4)
D = 16
GRID = sigma_grid(1e-3, 1e2, 48)


def random_gaussian(g, mean_shift: float = 0.0, scale: float = 0.02) -> GaussianPrior:
    A = torch.randn(D, D, dtype=F64, generator=g)
    cov = scale * (A @ A.T / D + 0.2 * torch.eye(D, dtype=F64))
    return GaussianPrior(0.5 + mean_shift + 0.05 * torch.randn(D, dtype=F64, generator=g), cov, SHAPE)


@pytest.fixture(scope="module")
def priors():
    g = torch.Generator().manual_seed(0)
    p = random_gaussian(g)
    near = GaussianPrior(p.mean + 0.02, p.cov * 1.2, SHAPE)
    far = random_gaussian(g, mean_shift=0.1, scale=0.03)
    return p, near, far


def exact_integral(p, q, mean, cov, sigmas=GRID) -> float:
    vals = torch.tensor([gaussian_integrand(p, q, mean, cov, float(s)) for s in sigmas], dtype=F64)
    return float(integrate(sigmas, vals, tails=True))


def linear_moments(fn, mean, cov, noise_dim: int):
    """Mean and covariance of fn(x, n) = c + G x + L n for x ~ N(mean, cov), n ~ N(0, I)."""
    zx, zn = torch.zeros(D, dtype=F64), torch.zeros(noise_dim, dtype=F64)
    c = fn(zx, zn)
    G = torch.stack([fn(e, zn) - c for e in torch.eye(D, dtype=F64)], 1)
    L = torch.stack([fn(zx, e) - c for e in torch.eye(noise_dim, dtype=F64)], 1)
    return c + G @ mean, G @ cov @ G.T + L @ L.T


def test_identity_quadrature_and_self_divergence(priors):
    p, near, far = priors
    for q in (near, far):
        fine = sigma_grid(1e-3, 1e2, 200)
        assert exact_integral(p, q, p.mean, p.cov, fine) == pytest.approx(gaussian_kl(p, q), rel=1e-6)
    x = p.sample(50, torch.Generator().manual_seed(1), dtype=F64)
    assert shift_kl(p, p, x, GRID).kl == 0.0


def test_clean_estimate_matches_the_closed_form_kl(priors):
    p, near, far = priors
    x = p.sample(2000, torch.Generator().manual_seed(2), dtype=F64)
    for q in (near, far):
        res = shift_kl(p, q, x, GRID, tails=True, batch_size=1000)
        kl = gaussian_kl(p, q)
        assert res.stderr < 0.03 * kl
        assert abs(res.kl - kl) < 4 * res.stderr + 1e-4 * kl, (res.kl, res.stderr, kl)
        assert len(res.integrand) == len(GRID) and res.per_image.shape == (2000,)


def inpainting_task(sigma_y=0.1):
    return Task(partial(Mask.random, drop_ratio=0.5), sigma_y=sigma_y, per_sample=False)


def mri_task(sigma_y=0.05):
    return Task(partial(SingleCoilMRI.cartesian, acceleration=2.0, center_fraction=0.25), sigma_y=sigma_y,
                per_sample=False)


@pytest.mark.parametrize("kind", ["inpainting", "mri"])
def test_measurement_estimate_matches_its_exact_value(priors, kind):
    p, near, far = priors
    task = inpainting_task() if kind == "inpainting" else mri_task()
    A = task.make_operator(SHAPE, [0], seed=0)                 # the operator measured_images will use
    sy = task.sigma_y
    if kind == "inpainting":
        fn, m = (lambda x, n: image_domain(A, A(x.reshape(1, *SHAPE)) + sy * n.reshape(1, *SHAPE)).reshape(D)), D
    else:
        fn = (lambda x, n: image_domain(A, A(x.reshape(1, *SHAPE)) + sy * torch.complex(
            n[:D], n[D:]).reshape(1, *SHAPE)).reshape(D))
        m = 2 * D
    mean, cov = linear_moments(fn, p.mean, p.cov, m)
    x = p.sample(2000, torch.Generator().manual_seed(3), dtype=F64)
    y = measured_images(task, x, seed=0, batch_size=500)
    np.testing.assert_allclose(y.reshape(-1, D).mean(0).numpy(), mean.numpy(), atol=0.02)  # the moments fit
    for q in (near, far):
        res = shift_kl(p, q, y, GRID, tails=True, batch_size=1000)
        exact = exact_integral(p, q, mean, cov)
        assert abs(res.kl - exact) < 4 * res.stderr + 1e-4 * exact, (kind, res.kl, res.stderr, exact)


def test_measurement_estimate_keeps_the_clean_ranking(priors):
    p, near, far = priors
    A = inpainting_task().make_operator(SHAPE, [0], seed=0)
    fn = lambda x, n: image_domain(A, A(x.reshape(1, *SHAPE)) + 0.1 * n.reshape(1, *SHAPE)).reshape(D)  # noqa: E731
    mean, cov = linear_moments(fn, p.mean, p.cov, D)
    clean = [gaussian_kl(p, q) for q in (near, far)]
    measured = [exact_integral(p, q, mean, cov) for q in (near, far)]
    assert clean[0] < clean[1] and measured[0] < measured[1]


def test_block_mask_and_task_measurements():
    g = torch.Generator().manual_seed(4)
    A = Mask.blocks((1, 64, 64), g, blocks=16, drop_ratio=0.5)
    m = A.mask[0, 0]
    cells = m.reshape(16, 4, 16, 4)
    assert torch.equal(cells.amax((1, 3)), cells.amin((1, 3)))        # constant on each 4×4 cell
    assert 0.3 < float(m.mean()) < 0.7
    x = torch.rand(3, 1, 64, 64)
    task = Task(partial(Mask.blocks, blocks=16, drop_ratio=0.5), sigma_y=0.0, per_sample=True)
    y = measured_images(task, x)
    A0 = task.make_operator((1, 64, 64), [0], seed=0)
    torch.testing.assert_close(y[0], (x[0] * A0.mask[0] + 0.5 * (1 - A0.mask[0])))


def test_shift_runner_writes_json(tmp_path):
    from invlab.cli.shift import main

    out = tmp_path / "shift.json"
    report = main(["--p", "gaussian", "--q", "gaussian", "tv", "--data", "mnist_test", "--data-set", "size=8",
                   "limit=6", "--task", "inpaint_blocks", "mri", "--n-sigmas", "4", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["n"] == 6 and set(saved["kl"]) == {"gaussian", "tv"}
    assert set(saved["kl"]["tv"]) == {"clean", "inpaint_blocks", "mri"}
    assert saved["kl"]["gaussian"]["clean"]["kl"] == 0.0 and saved["kl"]["tv"]["clean"]["kl"] > 0
    assert report["kl"]["tv"]["mri"]["kl"] == saved["kl"]["tv"]["mri"]["kl"]
