"""The shared DDPM schedule: ᾱ values, σ ↔ t maps, DDIM subsequences, and the unconditional sampler."""
import math

import pytest
import torch

from invlab.errors import ConfigError
from invlab.priors.schedule import DDPMSchedule, ddim_sample


@pytest.fixture(scope="module")
def sched():
    return DDPMSchedule()


def test_alpha_bar_values(sched):
    assert sched.betas[0] == pytest.approx(1e-4) and sched.betas[-1] == pytest.approx(0.02)
    assert sched.alphas_cumprod[0] == pytest.approx(1 - 1e-4, abs=1e-15)
    # ᾱ_t = Π(1 − β_s) with β linear; closed-form check of two entries in float64
    for t in (1, 499, 999):
        betas = [1e-4 + (0.02 - 1e-4) * s / 999 for s in range(t + 1)]
        assert float(sched.alpha_bar(t)) == pytest.approx(math.prod(1 - b for b in betas), rel=1e-10)
    assert float(sched.alpha_bar(999)) == pytest.approx(4.04e-5, rel=0.01)   # the known linear-schedule end
    assert float(sched.alpha_bar(-1)) == 1.0
    assert torch.all(sched.alphas_cumprod[1:] < sched.alphas_cumprod[:-1])
    # σ_t = √((1−ᾱ)/ᾱ): ~0.01 at t=0, ~157 at t=999 ([-1, 1] scale)
    assert sched.sigma_min == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)))
    assert sched.sigma_max == pytest.approx(157.3, rel=0.01)
    t = torch.arange(0, 1000, 7)
    ab = sched.alpha_bar(t)
    assert torch.allclose(sched.sigma(t), ((1 - ab) / ab).sqrt(), rtol=1e-12)


def test_sigma_t_round_trip(sched):
    t = torch.cat([torch.arange(0, 1000, 37).double(), torch.tensor([0.25, 10.5, 998.9, 999.0])])
    assert torch.allclose(sched.t_from_sigma(sched.sigma(t)), t, atol=1e-9)
    s = torch.logspace(math.log10(sched.sigma_min), math.log10(sched.sigma_max), 50, dtype=torch.float64)
    assert torch.allclose(sched.sigma(sched.t_from_sigma(s)), s, rtol=1e-10)
    # continuous ᾱ(t) is monotone and agrees with the table at integers
    tf = torch.linspace(0, 999, 2000, dtype=torch.float64)
    assert torch.all(sched.alpha_bar(tf)[1:] < sched.alpha_bar(tf)[:-1])
    assert torch.allclose(sched.alpha_bar(torch.arange(1000)), sched.alphas_cumprod)
    # nearest: integer, and the best integer in log σ
    tn = sched.t_from_sigma(s, "nearest")
    assert torch.all(tn == tn.round())
    err = (sched.sigma(tn).log() - s.log()).abs()
    assert torch.all(err <= (sched.sigma((tn + 1).clamp(max=999)).log() - s.log()).abs() + 1e-12)
    assert torch.all(err <= (sched.sigma((tn - 1).clamp(min=0)).log() - s.log()).abs() + 1e-12)
    # out of range: clamped
    assert float(sched.t_from_sigma(1e-6)) == 0.0 and float(sched.t_from_sigma(1e6)) == 999.0
    with pytest.raises(ConfigError):
        sched.t_from_sigma(0.1, "linear")


def test_image_space_sigma_maps_to_doubled_model_sigma(sched):
    # σ = 25/255 on [0, 1] is 50/255 on [-1, 1]: its t has √((1−ᾱ)/ᾱ) = 2σ
    t = sched.t_from_sigma(2 * 25 / 255)
    ab = float(sched.alpha_bar(t))
    assert math.sqrt((1 - ab) / ab) == pytest.approx(2 * 25 / 255, rel=1e-9)


@pytest.mark.parametrize("skip", ["uniform", "quad", "diffpir"])
@pytest.mark.parametrize("n", [1, 3, 10, 50, 100, 250, 1000])
def test_ddim_subsequences(sched, skip, n):
    if n == 1 and skip != "uniform":
        pytest.skip("a one-step quadratic sequence is degenerate")
    seq = sched.timesteps(n, skip)
    assert seq.dtype == torch.long and len(seq) == n
    assert int(seq[0]) == 0 and int(seq[-1]) <= 999
    assert torch.all(seq[1:] > seq[:-1])
    if n == 1000:
        assert torch.equal(seq, torch.arange(1000))


def test_ddim_subsequence_values(sched):
    assert sched.timesteps(50).tolist() == list(range(0, 1000, 20))
    assert sched.timesteps(3).tolist() == [0, 333, 666]  # diffusers/DMPlug: t = [666, 333, 0] walked backwards
    quad = sched.timesteps(10, "quad")
    assert quad[-1] == int(0.8 * 1000) and torch.all(torch.diff(quad)[1:] >= torch.diff(quad)[:-1])  # growing gaps
    dp = sched.timesteps(10, "diffpir")
    assert dp[-1] == 999 and dp[0] == 0 and torch.all(torch.diff(dp)[1:] >= torch.diff(dp)[:-1] - 1)
    with pytest.raises(ConfigError):
        sched.timesteps(1001)
    with pytest.raises(ConfigError):
        sched.timesteps(10, "cosine")


def test_ddim_eta1_full_is_ddpm_ancestral():
    """DDIM with η=1 over all T steps is DDPM with the fixed-small variance: compare one step by hand."""
    s = DDPMSchedule(num_steps=20)
    x0_true = torch.full((1, 1, 2, 2), 0.3)
    eps_fn = lambda x, t: s.eps_from_x0(x, t, x0_true.expand_as(x))  # noqa: E731 - an oracle of the data point
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    out = ddim_sample(eps_fn, s, (1, 1, 2, 2), steps=20, eta=1.0, generator=g1, clip=False)
    # by hand: x_T ~ N(0, I); each step x_{t−1} = mean_t(x0, x_t) + √β̃_t z
    x = torch.randn((1, 1, 2, 2), generator=g2)
    for t in range(19, -1, -1):
        ab, ab_prev, beta = s.alphas_cumprod[t], (s.alphas_cumprod[t - 1] if t else 1.0), s.betas[t]
        mean = beta * ab_prev**0.5 / (1 - ab) * x0_true + (1 - ab_prev) * (1 - beta) ** 0.5 / (1 - ab) * x
        var = beta * (1 - ab_prev) / (1 - ab)
        x = mean.float() + (var**0.5).float() * torch.randn((1, 1, 2, 2), generator=g2) if t else mean.float()
    assert torch.allclose(out, x, atol=1e-5)
    assert torch.allclose(out, x0_true, atol=1e-5)  # the oracle ε lands on its point


def test_ddim_deterministic_and_seeded():
    s = DDPMSchedule()
    eps_fn = lambda x, t: 0.1 * x  # noqa: E731
    a = ddim_sample(eps_fn, s, (2, 1, 3, 3), steps=10, generator=torch.Generator().manual_seed(0))
    b = ddim_sample(eps_fn, s, (2, 1, 3, 3), steps=10, generator=torch.Generator().manual_seed(0))
    c = ddim_sample(eps_fn, s, (2, 1, 3, 3), steps=10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() <= 1.0  # clip=True keeps x̂0, hence the final sample, in [-1, 1]


def test_schedule_dict_round_trip():
    s = DDPMSchedule(2e-4, 0.03, 500)
    r = DDPMSchedule.from_dict(s.to_dict())
    assert torch.equal(r.alphas_cumprod, s.alphas_cumprod) and "T=500" in repr(r)
    with pytest.raises(ConfigError):
        DDPMSchedule(kind="cosine")
