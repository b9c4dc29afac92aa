"""PnP-TTT (invlab/solvers/pnp_ttt.py): the measurement split, the ttt_steps=0 limit, the untouched prior,
NFE, refusals, and that test-time training lowers the held-out measurement loss of an independent solve.

The real network is the shipped natural-image denoiser dncnn_gray on 32×32 phantoms (the experiment's
mismatch: experiments/pnp_ttt). Independent references: solver=pnp_pgd (invlab/solvers/pnp_pgd.py) for
the plain PnP iteration, and hand-written masks / loss for the split.
"""
from __future__ import annotations

import copy
import logging

import pytest
import torch
from omegaconf import OmegaConf

from invlab.data.datasets import phantoms
from invlab.errors import ConfigError
from invlab.ops.mask import Mask
from invlab.ops.mri import SingleCoilMRI
from invlab.priors.learned import LearnedDenoiser
from invlab.priors.tv import TVPrior
from invlab.solvers.pnp_pgd import PnPPGD
from invlab.solvers.pnp_ttt import PnPTTT, acs_columns, split_measurement
from invlab.utils.config import build

N = 32


@pytest.fixture(scope="module")
def prior():
    return LearnedDenoiser("dncnn_gray")


def mri_problem(acceleration=4.0, n=2, sigma_y=0.01):
    cfg = OmegaConf.load("conf/task/mri.yaml")
    cfg.operator.acceleration, cfg.sigma_y = acceleration, sigma_y
    x = torch.stack([phantoms(n=n, size=N, seed=0)[i]["x"] for i in range(n)])
    A, y = build(cfg).measure(x, list(range(n)), seed=0)
    return x, A, y


def mirror(j: int, w: int = N) -> int:
    """Column of −k for column j of a centred spectrum of even width w."""
    return (w - j) % w


# ---- the split -------------------------------------------------------------------------------------
def test_mri_split_partitions_whole_columns_keeps_acs_pairs_mirrors_and_has_the_set_rate():
    A = SingleCoilMRI.cartesian((1, N, N), torch.Generator().manual_seed(0), acceleration=2.0)
    x = torch.rand(4000, 1, N, N, generator=torch.Generator().manual_seed(1))
    y = A(x)                                                    # noiseless: y_Λ must be exactly A_Λ x
    A_in, y_in, out = split_measurement(A, y, 0.3, torch.Generator().manual_seed(2))
    measured = A.mask.reshape(N).bool()
    held_in, held_out = A_in.mask.reshape(-1, N).bool(), out.reshape(-1, N).bool()
    assert torch.equal(held_in | held_out, measured.expand_as(held_in)) and not (held_in & held_out).any()
    acs = acs_columns(A.mask)
    assert acs[N // 2] and acs.sum() >= round(0.08 * N) and not held_out[:, acs].any()
    acs = acs | acs[[mirror(j) for j in range(N)]]  # mirrors of ACS columns are their data too
    for j in range(N):  # a held-out column takes its mirror along (when that is measured)
        if measured[j] and measured[mirror(j)]:
            assert torch.equal(held_out[:, j], held_out[:, mirror(j)])
    free = measured & ~acs
    rate = held_out[:, free].float().mean()
    assert abs(float(rate) - 0.3) < 0.01, rate            # 4000 draws × several columns: sd ≈ 0.003
    torch.testing.assert_close(y_in, A_in(x))              # A_in's data are the held-in entries of y
    assert torch.equal(A.mask.reshape(N).bool(), measured)  # A itself is untouched


def test_inpainting_split_is_per_pixel():
    A = Mask.random((1, N, N), torch.Generator().manual_seed(0), drop_ratio=0.5)
    y = A(torch.rand(3, 1, N, N))
    A_in, y_in, out = split_measurement(A, y, 0.25, torch.Generator().manual_seed(1))
    m = A.mask.bool().expand(3, 1, N, N)
    assert torch.equal(A_in.mask.bool() | out.bool(), m) and not (A_in.mask.bool() & out.bool()).any()
    assert 0.15 < float(out.sum() / m.sum()) < 0.35
    torch.testing.assert_close(y_in, A_in.mask * y)


# ---- the solver ------------------------------------------------------------------------------------
def test_zero_ttt_steps_is_pnp_pgd(prior):
    x, A, y = mri_problem()
    settings = dict(iters=15, sigma_den=0.04, step_scale=1.0)
    ref = PnPPGD(**settings)(y, A, prior)
    res = PnPTTT(ttt_steps=0, tol=0.0, **settings)(y, A, prior)
    torch.testing.assert_close(res.x, ref.x, atol=1e-5, rtol=0)
    assert res.nfe == ref.nfe == 15 and len(res.trace["residual"]) == 15


def test_the_shared_prior_is_unchanged_and_nfe_counts_every_forward_call(prior):
    x, A, y = mri_problem()
    before = copy.deepcopy(prior.net.state_dict())
    res = PnPTTT(iters=5, ttt_steps=3, ttt_iters=4, lr=1e-3, sigma_den=0.04)(
        y, A, prior, generator=torch.Generator().manual_seed(0))
    after = prior.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in prior.net.parameters())
    assert res.nfe == 3 * (4 + 1) + 5
    assert len(res.trace["heldout"]) == len(res.trace["heldin"]) == 3 and len(res.trace["residual"]) == 5
    assert torch.isfinite(res.x).all()


@pytest.mark.parametrize("neumann_iters", [0, 10])
def test_ttt_lowers_the_held_out_loss_of_an_independent_pnp_solve(prior, neumann_iters):
    """Adapt on one fixed split; then plain PnP-PGD on the held-in data (pnp_pgd.py, not the TTT code)
    predicts the held-out k-space columns better with the adapted denoiser than with the original.
    (32² Shepp–Logan, R = 2: three held-out columns; the loss falls to 0.43 / 0.51 of its start.)"""
    x, A, y = mri_problem(acceleration=2.0, n=1)
    ttt = PnPTTT(sigma_den=0.04, ttt_steps=10, ttt_iters=20, lr=1e-4, holdout=0.3, resplit=False,
                 neumann_iters=neumann_iters)
    D = ttt.adapt(y, A, prior, generator=torch.Generator().manual_seed(6))
    A_in, y_in, out = split_measurement(A, y, 0.3, torch.Generator().manual_seed(6))  # the same split
    assert out.sum() == 3
    adapted = copy.deepcopy(prior)
    adapted.net = D.nets[0].requires_grad_(False)

    def held_out_loss(p):
        xh = PnPPGD(iters=100, sigma_den=0.04)(y_in, A_in, p).x
        return float((out * (A(xh) - y)).abs().pow(2).sum() / (out * y).abs().pow(2).sum())

    before, after = held_out_loss(prior), held_out_loss(adapted)
    assert after < 0.7 * before, (before, after)


def test_neumann_gradient_converges_to_the_exact_implicit_gradient(tmp_path):
    """dℓ(x̄(θ))/dθ = (∂T/∂θ)ᵀ(I − Jᵀ)⁻¹∇ℓ with J = ∂T/∂x from a dense Jacobian at the converged fixed point
    of a contractive T (a small non-residual DnCNN), in float64; JFB (K = 0) differs from it."""
    from invlab.nets.dncnn import DnCNN
    from invlab.priors.checkpoint import save_checkpoint
    from invlab.solvers.pnp_ttt import PerSampleDenoiser
    from invlab.solvers.fixed_point import deq_step

    torch.manual_seed(0)
    arch = {"_target_": "invlab.nets.dncnn.DnCNN", "in_channels": 1, "depth": 3, "features": 4,
            "sigma_input": True, "residual": False}
    net = DnCNN(**{k: v for k, v in arch.items() if k != "_target_"})
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1.5)  # spectral radius of J ≈ 0.6: contractive, yet far enough from 0 for JFB to differ
    small = LearnedDenoiser(str(save_checkpoint(tmp_path / "tiny", net, arch))).double()
    n = 8
    A = SingleCoilMRI.cartesian((1, n, n), torch.Generator().manual_seed(1), acceleration=2.0).double()
    x = phantoms(n=1, size=n, seed=0)[0]["x"][None].double()
    y = A(x) + 0.01 * torch.randn(A(x).shape, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))
    _, _, out = split_measurement(A, y, 0.3, torch.Generator().manual_seed(0))
    assert out.sum() == 2  # one ±k pair of columns held out
    sigma, step = torch.full((1,), 0.05, dtype=torch.float64), torch.ones(1, 1, 1, 1, dtype=torch.float64)

    def grads(K):
        D = PerSampleDenoiser(small.net, 1, small.stats)
        T = deq_step("pnp_pgd", A, y, D, sigma, step, 0.0)
        xb = A.baseline(y)
        with torch.no_grad():
            for _ in range(300):
                xb = T(xb)
        with torch.enable_grad():
            PnPTTT(neumann_iters=K)._backward(T, xb, A, y, out)
        return torch.cat([p.grad.flatten() for p in D.parameters()]), D, T, xb

    g_neumann, D, T, xb = grads(200)
    g_jfb = grads(0)[0]
    # exact: dense J, (I − Jᵀ)⁻¹ ∇ℓ, then the vector-Jacobian product with ∂T/∂θ
    J = torch.autograd.functional.jacobian(lambda v: T(v.reshape(xb.shape)).reshape(-1), xb.reshape(-1))
    assert torch.linalg.eigvals(J).abs().max() < 0.9  # contractive: the series converges
    xh = T(xb).detach().requires_grad_(True)
    loss = (out * (A(xh) - y)).abs().pow(2).sum() / (out * y).abs().pow(2).sum()
    (gl,) = torch.autograd.grad(loss, xh)
    v = torch.linalg.solve(torch.eye(J.shape[0], dtype=J.dtype) - J.T, gl.reshape(-1)).reshape(xb.shape)
    with torch.enable_grad():
        exact = torch.cat([g.flatten() for g in torch.autograd.grad(T(xb), D.parameters(), v)])
    torch.testing.assert_close(g_neumann, exact, rtol=1e-6, atol=1e-10)
    assert (g_jfb - exact).norm() > 0.01 * exact.norm()  # JFB: 4% off here


def test_a_prior_without_a_network_is_refused():
    x, A, y = mri_problem(n=1)
    with pytest.raises(ConfigError, match="learned denoiser"):
        PnPTTT(ttt_steps=1)(y, A, TVPrior())


def test_a_non_mask_operator_trains_on_the_plain_loss_with_a_warning(prior, caplog):
    cfg = OmegaConf.load("conf/task/deblur.yaml")
    x = phantoms(n=1, size=N, seed=0)[0]["x"][None]
    A, y = build(cfg).measure(x, [0], seed=0)
    with caplog.at_level(logging.WARNING, logger="invlab"):
        res = PnPTTT(iters=3, ttt_steps=2, ttt_iters=2)(y, A, prior, generator=torch.Generator().manual_seed(0))
    assert "plain loss" in caplog.text
    assert res.trace["heldout"] == res.trace["heldin"]  # no split: both are ‖A x − y‖²/‖y‖²
    assert torch.isfinite(res.x).all()


@pytest.mark.parametrize("bad", [dict(ttt_steps=-1), dict(holdout=1.0), dict(lr=0.0), dict(ttt_iters=0)])
def test_bad_settings_are_refused(prior, bad):
    x, A, y = mri_problem(n=1)
    with pytest.raises(ConfigError):
        PnPTTT(**bad)(y, A, prior)
