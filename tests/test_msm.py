"""MSM (methods.md C): training sees only the measurements; the masked loss is the paper's weighted x̂0 loss; the
sampler's combination step against closed forms for a Gaussian prior; the likelihood step's units; the recipe.

What an MSM net estimates, for data z ~ N(m, C) on the model scale: fed M ⊙ x_t (observed set S), the loss only
constrains ε̂ on S, whose minimiser is E[ε_S | x_{t,S}], i.e. x̂0_M = E[z_S | x_{t,S}] = m_S + √ᾱ C_SS K⁻¹(x_S − √ᾱ m_S)
with K = ᾱ C_SS + (1−ᾱ) I: Tweedie for the *marginal* of the observed entries, not E[z | x_t] restricted to S.
So the sampler's average Σ_k M_k x̂0_k / Σ_k M_k over covering masks reproduces the full Tweedie estimate (and the
full score) exactly when entries in and out of every mask are independent (diagonal C), and not in general.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from invlab.errors import ConfigError
from invlab.ops.mask import Mask, rolled_block_mask
from invlab.priors.diffusion import DiffusionPrior, from_model, to_model
from invlab.priors.gaussian import GaussianPrior, stationary_gaussian
from invlab.priors.schedule import DDPMSchedule, ddim_sample
from invlab.solvers.msm import MSM, MaskSequence, likelihood_step, msm_generate, msm_step, msm_x0

from helpers_engine import train_tiny_unet
from invlab.analysis.exact import GaussianEps

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]
TINY_UNET = {"_target_": "invlab.nets.unet.UNet", "in_channels": 1, "channels": 8, "channel_mult": [1, 2],
             "num_res_blocks": 1, "attention_levels": [1], "heads": 2, "groups": 4}

pytestmark = pytest.mark.filterwarnings("ignore")


class MaskedGaussianEps(nn.Module):
    """The exact MSM target for z ~ N(m, C): on the support S of its (zero-filled) input, E[ε_S | x_{t,S}]
    = √(1−ᾱ) K⁻¹(x_S − √ᾱ m_S); zero elsewhere (the loss never constrains it there)."""

    def __init__(self, prior: GaussianPrior, schedule: DDPMSchedule):
        super().__init__()
        self.schedule, self.in_channels = schedule, prior.shape[0]
        self.m, self.C = 2 * prior.mean - 1, 4 * prior.cov

    def forward(self, x_in, t):
        ab = self.schedule.alpha_bar(t).to(F64)
        flat = x_in.reshape(x_in.shape[0], -1).to(F64)
        out = torch.zeros_like(flat)
        for b in range(flat.shape[0]):
            S = flat[b] != 0
            K = ab[b] * self.C[S][:, S] + (1 - ab[b]) * torch.eye(int(S.sum()), dtype=F64)
            out[b, S] = (1 - ab[b]).sqrt() * torch.linalg.solve(K, flat[b, S] - ab[b].sqrt() * self.m[S])
        return out.reshape(x_in.shape).to(x_in.dtype)


def marginal_tweedie(prior: GaussianPrior, x_t, ab: float, S):
    """E[z_S | x_{t,S}] on the model scale, written as a Wiener filter (not through ε)."""
    m, C = 2 * prior.mean - 1, 4 * prior.cov
    C_SS = C[S][:, S]
    K = ab * C_SS + (1 - ab) * torch.eye(int(S.sum()), dtype=F64)
    return m[S] + ab**0.5 * C_SS @ torch.linalg.solve(K, x_t[S] - ab**0.5 * m[S])


def replay(masks):
    it = iter(masks)
    return lambda: next(it)


@pytest.fixture(scope="module")
def schedule():
    return DDPMSchedule()


def noisy_point(prior, schedule, t, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = to_model(prior.sample(n, g, dtype=F64))
    ab = float(schedule.alpha_bar(t))
    x_t = ab**0.5 * z + (1 - ab) ** 0.5 * torch.randn(z.shape, generator=g, dtype=F64)
    return x_t, torch.full((n,), float(t), dtype=F64), ab


# ---- masks -----------------------------------------------------------------------------------------------

def test_training_masks_drop_exactly_six_of_sixteen_rolled_blocks():
    g = torch.Generator().manual_seed(0)
    masks = torch.stack([rolled_block_mask(28, 28, 4, 0.4, g) for _ in range(50)])
    assert torch.all(masks.flatten(1).sum(1) == 10 * 49)          # 10 of 16 blocks of 7×7 kept
    rows_start = (masks[:, :, 1:] != masks[:, :, :-1]).any(2)       # block boundaries move with the roll
    assert len({tuple(r.nonzero().flatten().tolist()) for r in rows_start}) > 3


def test_mask_sequence_covers_then_resets():
    seq = MaskSequence(5, 28, 28, 4, 0.4, torch.Generator().manual_seed(1))
    m1 = seq()
    shift = seq.shift.clone()
    m2 = seq()
    assert m1.shape == (5, 1, 28, 28)
    assert torch.all(m1.flatten(1).sum(1) == 490) and torch.all(m2.flatten(1).sum(1) == 490)  # 10 blocks of 49 px
    assert torch.all(m2 >= 1 - m1)                   # the second mask takes every block the first dropped: K=2 covers
    assert torch.equal(seq.shift, shift) and not seq.covered.any()  # same roll within a round, then a reset
    seq()
    assert not torch.equal(seq.shift, shift)         # a fresh round draws a new roll
    with pytest.raises(ConfigError):
        MaskSequence(1, 28, 28, 4, 1.0)


# ---- the combination step against closed forms --------------------------------------------------------------

@pytest.fixture(scope="module")
def correlated():
    return stationary_gaussian((1, 8, 8), mean=0.5, std=0.15, length=1.5)


@pytest.mark.parametrize("t", [40, 300, 800])
def test_combined_estimate_is_the_mask_average_of_marginal_tweedie(correlated, schedule, t):
    x_t, tt, ab = noisy_point(correlated, schedule, t)
    masks = [m.to(F64) for m in (lambda s: [s() for _ in range(3)])(MaskSequence(3, 8, 8, 4, 0.4,
                                                                                  torch.Generator().manual_seed(t)))]
    previous = torch.full_like(x_t, 7.0)
    got = msm_x0(MaskedGaussianEps(correlated, schedule), schedule, x_t, tt, replay(masks), 3, previous)
    want = torch.zeros_like(x_t)
    for b in range(3):
        acc, cnt = torch.zeros(64, dtype=F64), torch.zeros(64, dtype=F64)
        for m in masks:
            S = m[b].flatten() > 0
            acc[S] += marginal_tweedie(correlated, x_t[b].flatten(), ab, S)
            cnt += S
        want[b] = torch.where(cnt > 0, acc / cnt.clamp_min(1), 7.0).reshape(1, 8, 8)
    torch.testing.assert_close(got, want, atol=1e-9, rtol=0)
    # one mask leaves blocks uncovered: they keep the previous estimate
    one = msm_x0(MaskedGaussianEps(correlated, schedule), schedule, x_t, tt, replay(masks), 1, previous)
    assert torch.all(one[masks[0] == 0] == 7.0) and torch.all(one[masks[0] > 0] != 7.0)
    # ... and with correlated pixels the average is NOT the full Tweedie estimate E[z | x_t]
    full = schedule.x0_from_eps(x_t, tt, GaussianEps(correlated, schedule)(x_t, tt))
    assert (got - full).abs().max() > 1e-3


def test_independent_pixels_make_the_average_the_full_tweedie(schedule):
    g = torch.Generator().manual_seed(3)
    var = 0.01 + 0.04 * torch.rand(64, generator=g, dtype=F64)
    prior = GaussianPrior(0.3 + 0.4 * torch.rand(1, 8, 8, generator=g, dtype=F64), torch.diag(var))
    x_t, tt, _ = noisy_point(prior, schedule, 500)
    seq = MaskSequence(3, 8, 8, 4, 0.4, torch.Generator().manual_seed(0))
    got = msm_x0(MaskedGaussianEps(prior, schedule), schedule, x_t, tt, lambda: seq().to(F64), 2, torch.zeros_like(x_t))
    full = schedule.x0_from_eps(x_t, tt, GaussianEps(prior, schedule)(x_t, tt))
    torch.testing.assert_close(got, full, atol=1e-9, rtol=0)


def test_no_dropped_blocks_is_plain_ddim(correlated, schedule):
    """drop_ratio = 0: every mask is the whole image, so the MSM sampler is DDIM (η = 0) exactly, and the dds step
    at η = 0 is the same step."""
    shape = (4, 1, 8, 8)
    ref = ddim_sample(GaussianEps(correlated, schedule), schedule, shape, 10, 0.0, "uniform",
                      torch.Generator().manual_seed(5), dtype=F64)
    for kind in ("ddim", "dds"):
        out = msm_generate(MaskedGaussianEps(correlated, schedule), schedule, shape, steps=10, eta=0.0, kind=kind,
                           loops=2, grid=4, drop_ratio=0.0, generator=torch.Generator().manual_seed(5), dtype=F64,
                           clip=False)
        torch.testing.assert_close(to_model(out), ref, atol=1e-8, rtol=0)


def test_dds_step_formula(schedule):
    g = torch.Generator().manual_seed(0)
    x, x0, noise = (torch.randn(2, 1, 4, 4, generator=g, dtype=F64) for _ in range(3))
    t, t_prev = 600, 400
    ab, abp = float(schedule.alpha_bar(t)), float(schedule.alpha_bar(t_prev))
    eps = (x - ab**0.5 * x0) / (1 - ab) ** 0.5
    want = abp**0.5 * x0 + (1 - abp) ** 0.5 * (0.85 * noise + (1 - 0.85**2) ** 0.5 * eps)
    torch.testing.assert_close(msm_step(schedule, x, x0, t, t_prev, 0.85, "dds", noise), want)
    torch.testing.assert_close(msm_step(schedule, x, x0, t, -1, 0.85, "dds", None), x0)


# ---- the likelihood step ------------------------------------------------------------------------------------

def test_likelihood_step_is_in_image_units():
    from invlab.ops import OPERATORS

    g = torch.Generator().manual_seed(0)
    x_true = torch.rand(2, 1, 8, 8, generator=g)
    z0 = 2 * torch.rand(2, 1, 8, 8, generator=g) - 1
    A = Mask((1, 8, 8), rolled_block_mask(8, 8, 4, 0.4, g))
    y = A(x_true)
    x = from_model(z0)
    out = from_model(likelihood_step(z0, A, y, 1.0))
    torch.testing.assert_close(out * A.mask, y)                      # λ = 1 on a mask: observed pixels become y
    torch.testing.assert_close(out * (1 - A.mask), x * (1 - A.mask))
    torch.testing.assert_close(from_model(likelihood_step(z0, A, y, 1.75)), x - 1.75 * A.mask * (x - y))
    # the same step on the model scale with y_m = 2y − A1 (the reference's [-1, 1] operators)
    for op in (A, OPERATORS["super_resolution"].example((1, 8, 8), g)):
        y = op(x_true)
        y_m = 2 * y - op(torch.ones_like(x_true))
        torch.testing.assert_close(likelihood_step(z0, op, y, 1.75), z0 - 1.75 * op.pinv(op(z0) - y_m),
                                   atol=1e-4, rtol=0)


# ---- the solver -----------------------------------------------------------------------------------------------

def test_solver_with_lambda_one_keeps_the_observed_pixels(correlated, schedule):
    g = torch.Generator().manual_seed(2)
    x_true = correlated.sample(3, g).clamp(0, 1).float()
    A = Mask((1, 8, 8), torch.stack([rolled_block_mask(8, 8, 4, 0.4, g) for _ in range(3)])[:, None])
    y = A(x_true)
    prior = DiffusionPrior(net=MaskedGaussianEps(correlated, schedule), schedule=schedule, image_size=(8, 8))
    r = MSM(steps=12, loops=2, stepsize_likelihood=1.0)(y, A, prior, generator=torch.Generator().manual_seed(0))
    assert r.nfe == 12 * 2 and len(r.trace["data_residual"]) == 12
    torch.testing.assert_close(r.x * A.mask, y, atol=1e-6, rtol=0)
    assert r.trace["data_residual"][-1] < 1e-5
    free = MSM(steps=12, loops=2, stepsize_likelihood=0.0)(y, A, prior, generator=torch.Generator().manual_seed(0))
    assert (free.x * A.mask - y).abs().max() > 0.05                 # λ = 0 generates, ignoring y


def test_solver_refuses_a_full_image_checkpoint(correlated, schedule):
    prior = DiffusionPrior(net=MaskedGaussianEps(correlated, schedule), schedule=schedule, image_size=(8, 8))
    prior.card = {"kind": "diffusion", "recipe": "ddpm_mnist"}
    A = Mask((1, 8, 8), torch.ones(8, 8))
    y = torch.rand(1, 1, 8, 8)
    with pytest.raises(ConfigError, match="msm"):
        MSM(steps=2)(y, A, prior)
    assert MSM(steps=2, require_msm=False)(y, A, prior).x.shape == y.shape


# ---- training ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def module():
    from invlab.train.msm import MSMModule

    torch.manual_seed(0)
    m = MSMModule(TINY_UNET, ema_decay=None)
    with torch.no_grad():  # the UNet's last layers start at zero (ε̂ ≡ 0 would make the loss input-blind)
        for p in m.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def test_unobserved_pixels_never_reach_the_loss(module):
    from invlab.data.datasets import ImageDataset
    from invlab.train.measured import MeasuredImages
    from invlab.utils.config import build, load_option

    task = build(load_option("task", "inpaint_msm"))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 28, 28, generator=g)
    ds = MeasuredImages(ImageDataset(x.numpy()), task, seed=0, fill=0.0)
    M = ds.mask
    x_other = x + (1 - M) * torch.rand(x.shape, generator=g)         # differs only where unobserved
    ds_other = MeasuredImages(ImageDataset(x_other.numpy()), task, seed=0, fill=0.0)
    assert torch.equal(ds.y, ds_other.y) and torch.equal(M, ds_other.mask) and torch.equal(ds.y, M * x)
    assert torch.all(M.flatten(1).mean(1) == 0.625)

    def loss_and_grads(images):  # even fed clean images (a broken pipeline), the module re-masks them
        module.zero_grad()
        torch.manual_seed(1)
        loss = module.training_step({"x": images, "mask": M, "index": torch.arange(4)}, 0)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in module.net.parameters() if p.grad is not None]

    loss, grads = loss_and_grads(x)
    loss_other, grads_other = loss_and_grads(x_other)
    assert loss == loss_other and all(torch.equal(a, b) for a, b in zip(grads, grads_other)) and grads
    loss_obs, _ = loss_and_grads(x + M * 0.1)                         # an observed pixel does matter
    assert loss_obs != loss
    with pytest.raises(ConfigError, match="measure.task"):
        module.training_step({"x": x, "index": torch.arange(4)}, 0)


def test_loss_is_the_weighted_x0_loss(module):
    g = torch.Generator().manual_seed(4)
    M = torch.stack([rolled_block_mask(28, 28, 4, 0.4, g) for _ in range(4)])[:, None]
    y = M * (2 * torch.rand(4, 1, 28, 28, generator=g) - 1)
    t = torch.tensor([3, 250, 600, 999])
    noise = torch.randn(y.shape, generator=g)
    with torch.no_grad():
        loss = module.msm_loss(y, M, t, noise)
        ab = module.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)     # float64 from here on
        y_t = M.double() * (ab.sqrt() * y.double() + (1 - ab).sqrt() * noise.double())
        eps = module.net(y_t.float(), t.float()).double()
        x0 = (y_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        want = (ab / (1 - ab) * (M.double() * (y.double() - x0)) ** 2).mean()
    assert float(loss) == pytest.approx(float(want), rel=1e-4)


def test_train_recipe_smoke_exports_an_msm_prior(tmp_path):
    """`python train.py experiment=train/msm_mnist` for one step with a tiny UNet; the export loads and samples."""
    run_dir, export = train_tiny_unet(tmp_path, "msm_mnist", 1, "data.limit=16", "loader.batch_size=8",
                                      "val_data.limit=4", "module.sample_n=2")
    assert (run_dir / "samples" / "final.png").is_file()
    prior = DiffusionPrior(str(export))
    card = prior.card
    assert card["kind"] == "diffusion" and card["msm"]["grid"] == 4 and card["msm"]["drop_ratio"] == 0.4
    assert card["measurements"]["task"] == "inpaint_msm" and card["steps"] == 1
    assert set(card["metrics"]) == {"psnr_15", "psnr_25", "psnr_50", "psnr_100"}
    x = torch.rand(2, 1, 28, 28)
    A = Mask((1, 28, 28), rolled_block_mask(28, 28))
    out = MSM(steps=2, loops=2)(A(x), A, prior, generator=torch.Generator().manual_seed(0))
    assert out.x.shape == x.shape and torch.isfinite(out.x).all() and out.nfe == 4
    # generation through scripts/sample.py (sampler=msm), refused for a clean-trained prior
    from helpers_engine import load_script

    script = load_script("scripts/sample.py")
    png = tmp_path / "grid.png"
    args = ["sampler=msm", "n=2", "steps=2", "loops=2", "eta=1.0", "device=cpu", f"out={png}", "save_tensor=true"]
    assert script.main(["prior=msm_mnist", f"prior.checkpoint={export}", *args]) == 0
    assert torch.load(png.with_suffix(".pt")).shape == (2, 1, 28, 28)
    if (ROOT / "invlab" / "checkpoints" / "ddpm_mnist.safetensors").is_file():
        assert script.main(["prior=ddpm_mnist", *args]) == 1
