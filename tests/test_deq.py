"""DEQ training (invlab.train.deq): the forward fixed point against a closed-form linear solve, the JFB
gradient against its analytic form, non-convergence reported, and `python train.py experiment=train/deq_deblur`
end to end (a loadable export that the RED solver runs as the same operator)."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from invlab.ops.blur import Blur
from invlab.train.deq import DEQModule, deq_step, fixed_point

ROOT = Path(__file__).resolve().parents[1]
H = W = 6
N = H * W
TAU, GAMMA, SIGMA = 0.5, 0.8, 0.02


class ConvDenoiser(nn.Module):
    """A linear "denoiser" D(x) = w ⋆ x + b (3×3 circular cross-correlation, σ ignored)."""

    def __init__(self, seed=0, scale=0.08, bias=0.05):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter((torch.rand(3, 3, generator=g, dtype=torch.float64) * scale + 0.02))
        self.bias = nn.Parameter(torch.tensor(bias, dtype=torch.float64))

    def forward(self, x, sigma=None):
        xp = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="circular")
        return torch.nn.functional.conv2d(xp, self.weight.view(1, 1, 3, 3)) + self.bias


class Gain(nn.Module):
    def __init__(self, gain):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(float(gain)))

    def forward(self, x, sigma=None):
        return self.gain * x


def dense(f, n=N):
    """The matrix of a linear map on (1, 1, H, W) images, column by column (float64)."""
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, H, W)
    return torch.stack([f(eye[i:i + 1]).flatten() for i in range(n)], dim=1)


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    kernel = torch.rand(3, 3, generator=g, dtype=torch.float64) + 0.2
    A = Blur((1, H, W), kernel / kernel.sum()).double()
    y = torch.rand(1, 1, H, W, generator=g, dtype=torch.float64)
    return A, y


def closed_form(kind, A, y, net):
    """The fixed point of the linear equation, solved densely: with D(x) = Wx + b,
    red: (AᵀA + τ(I − W))x = Aᵀy + τb;  pnp_pgd: x = W(x − γAᵀ(Ax − y)) + b."""
    with torch.no_grad():
        return _closed_form(kind, A, y, net)


def _closed_form(kind, A, y, net):
    M = dense(lambda v: A.adjoint(A(v)))
    Wd = dense(lambda v: net(v) - net(torch.zeros_like(v)))
    b = net(torch.zeros(1, 1, H, W, dtype=torch.float64)).flatten()
    Aty = A.adjoint(y).flatten()
    eye = torch.eye(N, dtype=torch.float64)
    if kind == "red":
        x = torch.linalg.solve(M + TAU * (eye - Wd), Aty + TAU * b)
    else:
        x = torch.linalg.solve(eye - Wd @ (eye - GAMMA * M), GAMMA * Wd @ Aty + b)
    return x.reshape(1, 1, H, W)


def step(kind, A, y, net):
    sigma = torch.full((1,), SIGMA, dtype=torch.float64)
    return deq_step(kind, A, y, net, sigma, torch.full((1, 1, 1, 1), GAMMA, dtype=torch.float64), TAU)


@pytest.mark.parametrize("kind", ["red", "pnp_pgd"])
def test_forward_fixed_point_is_the_closed_form_solution(kind):
    A, y = problem()
    net = ConvDenoiser()
    fp = fixed_point(step(kind, A, y, net), y.clone(), max_iters=2000, tol=1e-13)
    assert fp.converged and fp.finite and 1 < fp.iters < 2000
    torch.testing.assert_close(fp.x, closed_form(kind, A, y, net), rtol=0, atol=1e-10)
    assert not fp.x.requires_grad


@pytest.mark.parametrize("kind", ["red", "pnp_pgd"])
def test_jfb_gradient_is_the_gradient_through_one_step_at_the_fixed_point(kind):
    """JFB: dL/dθ of L = mean((T_θ(x*) − x)²) with x* held fixed. With D = w ⋆ · + b the step is affine in
    θ: ∂T/∂w_k = c·shift_k(u), ∂T/∂b = c, where red: u = x*, c = γτ; pnp_pgd: u = x* − γAᵀ(Ax* − y), c = 1."""
    A, y = problem(1)
    net = ConvDenoiser(seed=1)
    x_true = torch.rand(1, 1, H, W, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    T = step(kind, A, y, net)
    fp = fixed_point(T, y.clone(), max_iters=2000, tol=1e-13)
    loss = (T(fp.x) - x_true).pow(2).mean()
    loss.backward()

    x_star = closed_form(kind, A, y, net).numpy()[0, 0]
    if kind == "red":
        u, c = x_star, GAMMA * TAU
    else:
        u, c = x_star - GAMMA * A.adjoint(A(torch.from_numpy(x_star)[None, None]) - y).numpy()[0, 0], 1.0
    with torch.no_grad():
        r = (T(torch.from_numpy(x_star)[None, None]) - x_true).numpy()[0, 0]
    grad_w = np.array([[2 / N * c * (r * np.roll(u, (-(i - 1), -(j - 1)), axis=(0, 1))).sum() for j in range(3)]
                       for i in range(3)])
    grad_b = 2 / N * c * r.sum()
    np.testing.assert_allclose(net.weight.grad.numpy(), grad_w, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(net.bias.grad.item(), grad_b, rtol=1e-8, atol=1e-12)


def tiny_module(**kw):
    arch = {"_target_": "invlab.nets.dncnn.DnCNN", "depth": 2, "features": 4, "sigma_input": True}
    return DEQModule(arch, task="deblur", task_overrides=["operator.kernel_size=5"], **kw)


@pytest.mark.parametrize("gain,finite", [(1.5, True), (1e6, False)])
def test_a_nonconvergent_fixed_point_is_reported(gain, finite, caplog):
    """PnP-PGD with D(x) = gain·x, gain > 1: T is expansive, the iteration diverges; it is logged and counted,
    and a non-finite iterate skips the step instead of training on it."""
    module = tiny_module(step="pnp_pgd", max_iters=20, gamma=1.0)
    module.net = Gain(gain)
    batch = {"x": torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0)), "index": torch.tensor([0, 1])}
    with caplog.at_level(logging.WARNING, logger="invlab"):
        loss = module.training_step(batch, 0)
    assert "did not converge" in caplog.text and module.nonconverged_steps == 1
    assert (loss is not None) == finite
    if finite:
        assert torch.isfinite(loss) and loss.requires_grad


def test_a_contractive_step_converges_silently(caplog):
    module = tiny_module(step="pnp_pgd", max_iters=200, tol=1e-6, gamma=1.0)
    module.net = Gain(0.5)
    batch = {"x": torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0)), "index": torch.tensor([0, 1])}
    with caplog.at_level(logging.WARNING, logger="invlab"):
        loss = module.training_step(batch, 0)
    assert "did not converge" not in caplog.text and module.nonconverged_steps == 0
    loss.backward()
    assert module.net.gain.grad is not None and module.net.gain.grad != 0


def test_train_deq_deblur_end_to_end_exports_the_solvers_operator(tmp_path):
    from invlab.priors.learned import LearnedDenoiser
    from invlab.solvers.red import RED
    from invlab.utils.config import build, load_option

    export = tmp_path / "deq.safetensors"
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "experiment=train/deq_deblur", "trainer.max_steps=2",
                        "loader.batch_size=2", "data.length=4", "module.max_iters=4", "val_data.size=32",
                        "val_data.limit=1", "trainer.val_check_interval=2", "checkpoint_every=2", "logger=none",
                        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                        "trainer.max_time=null", f"export={export}", f"hydra.run.dir={tmp_path / 'run'}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    prior = LearnedDenoiser(str(export))
    card = prior.card
    assert card["recipe"] == "deq_deblur" and card["steps"] == 2 and card["init_from"] == "dncnn_gray"
    assert card["loss"] == "deq_jfb_mse" and card["deq"]["step"] == "red" and card["final_loss"] > 0
    assert set(card["metrics"]) == {"psnr_deq", "psnr_input"}
    assert card["metrics"]["psnr_deq"] > card["metrics"]["psnr_input"]  # deblurring beats the blurred input
    assert "solver=red" in card["run_with"]

    # the exported denoiser run by the RED solver (same settings) is the module's operator, iterate for iterate
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    module = DEQModule(prior.arch, max_iters=4, tol=1e-30)
    module.net.load_state_dict(prior.net.state_dict())
    fp, _, y = module.solve(x, [0], seed=7)
    A = build(load_option("task", "deblur")).measure(x, [0], seed=7)[0]
    out = RED(iters=4, method="gd", tau=0.25, sigma_den=0.02, sigma_den_factor=None)(y, A, prior)
    assert fp.iters == 4
    torch.testing.assert_close(out.x, fp.x, rtol=1e-5, atol=1e-6)
