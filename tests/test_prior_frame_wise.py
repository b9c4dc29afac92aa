"""Frame-wise image priors on videos (issue 15, the per-frame TV baseline of the FLAIR table).

A prior with `frame_wise = True` (TV) takes clips (B, C, T, H, W) and denoises every frame as an image of its
clip's σ; checked against the same prior on the frames as an image batch. Through it an image solver runs on
a video operator: PnP-ADMM on a clip equals PnP-ADMM on each of its frames alone (every step is per frame).
Priors that are not frame-wise refuse a clip in one sentence that names the video priors.
"""
from __future__ import annotations

import pytest
import torch

from invlab.errors import ShapeError
from invlab.ops.video import VideoBlur, VideoSuperResolution
from invlab.priors.gaussian import GaussianPrior
from invlab.priors.tv import TVPrior
from invlab.solvers.pnp_admm import PnPADMM


def clips(b=2, c=1, t=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, t, h, w, generator=g, dtype=torch.float64)


def test_tv_denoises_each_frame_as_an_image():
    x = clips()
    sigma = torch.tensor([0.05, 0.2], dtype=torch.float64)
    prior = TVPrior(weight=0.7, iters=30)
    out = prior.denoise(x, sigma)
    assert out.shape == x.shape
    for t in range(x.shape[2]):
        torch.testing.assert_close(out[:, :, t], prior.denoise(x[:, :, t], sigma), rtol=0, atol=1e-12)
    score = prior.score(x, sigma)  # Tweedie with a per-clip σ broadcast over (C, T, H, W)
    torch.testing.assert_close(score, (out - x) / sigma.view(-1, 1, 1, 1, 1) ** 2, rtol=0, atol=1e-9)


def test_pnp_admm_on_a_clip_equals_each_frame_alone():
    x = clips(b=1, t=3, h=8, w=8)
    A = VideoSuperResolution((1, 3, 8, 8), scale=2)
    A1 = VideoSuperResolution((1, 1, 8, 8), scale=2)
    y = A(x) + 0.01 * torch.randn(A(x).shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    solver = PnPADMM(iters=5, rho=0.1, sigma_den=0.05, sigma_den_factor=None)
    whole = solver(y, A, TVPrior(weight=0.5, iters=20)).x
    for t in range(3):
        alone = solver(y[:, :, t:t + 1], A1, TVPrior(weight=0.5, iters=20)).x
        torch.testing.assert_close(whole[:, :, t:t + 1], alone, rtol=0, atol=1e-10)


def test_a_blurred_clip_gets_closer_to_the_truth():
    x = clips(b=1, t=2, h=16, w=16).clamp(0.2, 0.8)
    x = torch.nn.functional.avg_pool2d(x.flatten(0, 2)[:, None], 3, 1, 1).reshape(x.shape)  # smooth clips
    A = VideoBlur.gaussian((1, 2, 16, 16), kernel_size=5, kernel_std=1.0)
    y = A(x)
    out = PnPADMM(iters=20, rho=0.05, sigma_den=0.02, sigma_den_factor=None)(y, A, TVPrior(weight=0.2, iters=30)).x
    assert (out - x).pow(2).mean() < (y - x).pow(2).mean()


def test_a_prior_that_is_not_frame_wise_refuses_a_clip():
    prior = GaussianPrior(0.5, 0.1, shape=(1, 8, 8))
    with pytest.raises(ShapeError, match=r"expects a \(B, C, H, W\) batch .*a video prior: prior=flair_faces, or a "
                                         r"frame-wise image prior such as prior=tv"):
        prior.denoise(clips(), 0.1)
    with pytest.raises(ShapeError, match=r"expects a \(B, C, H, W\) batch but got shape \(2, 8\)\.$"):
        TVPrior().denoise(torch.zeros(2, 8), 0.1)
