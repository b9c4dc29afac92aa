"""DiffusionPrior: with the *exact* ε-predictor of a Gaussian data distribution, Tweedie denoising through
the [0, 1] ↔ [-1, 1] and σ ↔ t conversions must equal the exact Wiener denoiser; plus checkpoints and sampling."""
from pathlib import Path

import pytest
import torch

from invlab.errors import CheckpointError
from invlab.priors.checkpoint import save_checkpoint
from invlab.priors.diffusion import DiffusionPrior
from invlab.priors.gaussian import stationary_gaussian
from invlab.priors.schedule import DDPMSchedule

from helpers_engine import train_tiny_unet
from invlab.analysis.exact import GaussianEps

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]
TINY_UNET = dict(in_channels=1, channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_levels=[1], heads=2,
                 groups=4)


@pytest.fixture(scope="module")
def gaussian():
    return stationary_gaussian((1, 4, 4), mean=0.5, std=0.15, length=1.5)


@pytest.fixture(scope="module")
def prior(gaussian):
    s = DDPMSchedule()
    return DiffusionPrior(net=GaussianEps(gaussian, s), schedule=s, image_size=(4, 4))


def noisy(gaussian, sigma, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = gaussian.sample(n, g, dtype=F64)
    return x0 + torch.as_tensor(sigma, dtype=F64).reshape(-1, 1, 1, 1) * torch.randn(x0.shape, generator=g, dtype=F64)


@pytest.mark.parametrize("sigma", [0.006, 0.02, 25 / 255, 0.3, 1.0, 5.0])
def test_tweedie_equals_exact_wiener_denoiser(prior, gaussian, sigma):
    x = noisy(gaussian, sigma)
    out = prior.denoise(x, sigma)
    exact = gaussian.denoise(x, sigma)
    assert out.dtype == F64
    assert torch.allclose(out, exact, atol=1e-9, rtol=0), (out - exact).abs().max()


def test_per_sample_sigmas_and_float32(prior, gaussian):
    sigma = torch.tensor([0.01, 0.05, 0.1, 0.2, 0.4, 0.8], dtype=F64)
    x = noisy(gaussian, sigma)
    assert torch.allclose(prior.denoise(x, sigma), gaussian.denoise(x, sigma), atol=1e-9)
    out32 = prior.denoise(x.float(), sigma.float())
    assert out32.dtype == torch.float32 and torch.allclose(out32.double(), gaussian.denoise(x, sigma), atol=1e-4)


def test_wrong_conversions_would_be_caught(prior, gaussian):
    """The test has teeth: denoising as if the noise were not doubled on [-1, 1] is far off."""
    sigma = 0.1
    x = noisy(gaussian, sigma)
    exact = gaussian.denoise(x, sigma)
    assert (prior.denoise(x, sigma / 2) - exact).abs().max() > 1e-2
    assert (prior.denoise(x, sigma) - exact).abs().max() < 1e-9


def test_nearest_t_exact_on_grid_and_close_between(gaussian):
    s = DDPMSchedule()
    near = DiffusionPrior(net=GaussianEps(gaussian, s), schedule=s, t_mode="nearest")
    on_grid = float(s.sigmas[300]) / 2  # image-space σ whose model σ is exactly σ_300
    assert float(near.t_of_sigma(on_grid)) == 300.0
    x = noisy(gaussian, on_grid)
    assert torch.allclose(near.denoise(x, on_grid), gaussian.denoise(x, on_grid), atol=1e-9)
    x = noisy(gaussian, 0.1)
    assert (near.denoise(x, 0.1) - gaussian.denoise(x, 0.1)).abs().max() < 5e-3  # neighbouring-step error


def test_below_schedule_and_zero_sigma(prior, gaussian):
    x = noisy(gaussian, 0.001)
    assert torch.equal(prior.denoise(x, 0.0), x)  # σ = 0: identity
    lo = prior.schedule.sigma_min / 2  # the smallest image-space σ the schedule covers
    a, b = prior.denoise(x, lo), prior.denoise(x, lo * (1 - 1e-9))
    assert torch.allclose(a, b, atol=1e-9)  # continuous where the score extrapolation starts
    assert (prior.denoise(x, 0.001) - gaussian.denoise(x, 0.001)).abs().max() < 5e-4  # score extrapolation


def test_native_scale_eps_x0_and_t(prior, gaussian):
    s = prior.schedule
    assert float(prior.t_of_sigma(25 / 255)) == pytest.approx(float(s.t_from_sigma(50 / 255)))
    t = torch.tensor([100.0, 400.0], dtype=F64)
    z0 = prior.to_model(gaussian.sample(2, torch.Generator().manual_seed(1), dtype=F64))
    x_t = s.q_sample(z0, t, torch.randn(z0.shape, dtype=F64, generator=torch.Generator().manual_seed(2)))
    prior.stats.reset()
    z_hat = prior.x0(x_t, t)
    assert prior.stats.nfe == 1
    # x̂0 on [-1, 1] is the Wiener estimate of z0 from x_t/√ᾱ = z0 + σ_t n, i.e. 2·D(x, σ_t/2) − 1
    sig = s.sigma(t)
    y = prior.from_model(x_t / s.alpha_bar(t).sqrt().view(-1, 1, 1, 1))
    assert torch.allclose(z_hat, prior.to_model(gaussian.denoise(y, sig / 2)), atol=1e-9)
    assert torch.allclose(prior.eps(x_t, t), s.eps_from_x0(x_t, t, z_hat), atol=1e-9)
    # score consistency: Prior.score = (D − x)/σ² matches the exact score
    x = noisy(gaussian, 0.2)
    assert torch.allclose(prior.score(x, 0.2), gaussian.score(x, 0.2), atol=1e-7)


@pytest.mark.parametrize("steps,eta", [(50, 0.0), (1000, 1.0)])
def test_sampling_the_exact_model_gives_the_gaussian(gaussian, steps, eta):
    s = DDPMSchedule()
    p = DiffusionPrior(net=GaussianEps(gaussian, s), schedule=s, image_size=(4, 4)).float()
    x = p.sample(1500, steps=steps, eta=eta, generator=torch.Generator().manual_seed(0))
    assert x.shape == (1500, 1, 4, 4) and p.stats.nfe == steps
    flat = x.double().reshape(1500, -1)
    assert (flat.mean(0) - gaussian.mean).abs().max() < 0.02
    assert (torch.cov(flat.T) - gaussian.cov).abs().max() < 0.005  # cov entries ≤ 0.0225


def test_gradient_through_denoise(prior, gaussian):
    x = noisy(gaussian, 0.1).requires_grad_(True)
    (g,) = torch.autograd.grad(prior.denoise(x, 0.1).sum(), x)
    # D is affine with Jacobian Σ(Σ + σ²I)⁻¹ for a Gaussian
    jac = gaussian.cov @ torch.linalg.inv(gaussian.cov + 0.01 * torch.eye(16, dtype=F64))
    assert torch.allclose(g.reshape(6, 16), jac.sum(0).expand(6, 16), atol=1e-9)


def test_checkpoint_round_trip(tmp_path):
    from invlab.priors.checkpoint import build_net

    path = tiny_ddpm_checkpoint(tmp_path / "tiny_ddpm")
    p = DiffusionPrior(str(path))
    assert p.channels == 1 and p.image_size == (28, 28) and p.schedule.num_steps == 1000
    assert not any(q.requires_grad for q in p.parameters())
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(p.denoise(x, 0.1), x)  # zero-initialised net predicts ε̂ = 0: identity
    assert p.sample(2, steps=3, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 28, 28)
    with pytest.raises(Exception, match="channel"):
        p.denoise(torch.rand(1, 3, 28, 28), 0.1)
    arch = dict(TINY_UNET, _target_="invlab.nets.unet.UNet")
    plain = save_checkpoint(tmp_path / "not_diffusion", build_net(arch), arch, {"channels": 1})
    with pytest.raises(CheckpointError, match="not a diffusion model"):
        DiffusionPrior(str(plain))
    with pytest.raises(CheckpointError, match="not found"):
        DiffusionPrior(str(tmp_path / "missing"))


def test_prior_config():
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "prior" / "ddpm_mnist.yaml")
    assert cfg.name == "ddpm_mnist" and cfg._target_ == "invlab.priors.diffusion.DiffusionPrior"
    assert cfg.checkpoint == "ddpm_mnist"


# ---- training and sampling -----------------------------------------------------------------------------

def tiny_ddpm_checkpoint(path: Path) -> Path:
    from invlab.priors.checkpoint import build_net

    arch = dict(TINY_UNET, _target_="invlab.nets.unet.UNet")
    card = {"kind": "diffusion", "schedule": DDPMSchedule().to_dict(), "image_size": [28, 28], "channels": 1}
    return save_checkpoint(path, build_net(arch), arch, card)


def test_ddpm_module_step_card_and_evaluation():
    from invlab.data.datasets import ImageDataset
    from invlab.train.diffusion import DDPMModule, TweedieDenoiser

    torch.manual_seed(0)
    module = DDPMModule(dict(TINY_UNET, _target_="invlab.nets.unet.UNet"), ema_decay=0.5, val_sigmas=(25, 50))
    x = torch.rand(8, 1, 28, 28)
    loss = module.training_step({"x": x, "index": torch.arange(8)}, 0)
    assert 0.8 < float(loss.detach()) < 1.2  # zero-initialised output: ε̂ = 0, loss = E[ε²] = 1
    loss.backward()
    assert all(p.grad is not None for p in module.net.parameters())
    with torch.no_grad():
        for p in module.net.parameters():
            p.add_(0.01)
    before = next(module.ema.net.parameters()).clone()
    module.on_train_batch_end(None, None, 0)
    ema_p, p = next(module.ema.net.parameters()), next(module.net.parameters())
    assert torch.allclose(ema_p, before + 0.9 * (p - before))  # warm-up: decay (1+0)/(10+0) = 0.1 at update 0
    for _ in range(30):
        module.on_train_batch_end(None, None, 0)
    assert module.ema.decay == 0.5 and int(module.ema.updates) == 31  # then the configured decay
    card = module.card()
    assert card["kind"] == "diffusion" and DDPMSchedule.from_dict(card["schedule"]).num_steps == 1000
    metrics = module.evaluate(ImageDataset(torch.rand(3, 1, 28, 28).numpy()), batch_size=2)
    assert set(metrics) == {"psnr_25", "psnr_50"}
    # the module's validation denoiser is the prior's denoiser
    prior = DiffusionPrior(net=module.export_net(), schedule=module.schedule)
    torch.testing.assert_close(TweedieDenoiser(module.export_net(), module.schedule)(x, 0.1), prior.denoise(x, 0.1))


def load_sample_script():
    from helpers_engine import load_script

    return load_script("scripts/sample.py")


def test_sample_script_writes_a_png(tmp_path, capsys):
    from PIL import Image

    ckpt = tiny_ddpm_checkpoint(tmp_path / "tiny_ddpm.safetensors")
    script = load_sample_script()
    out = tmp_path / "grid.png"
    args = ["prior=ddpm_mnist", f"prior.checkpoint={ckpt}", "n=6", "steps=3", "ncol=3", "device=cpu", f"out={out}"]
    assert script.main(args + ["save_tensor=true"]) == 0
    with Image.open(out) as im:
        assert im.size[0] > im.size[1] > 0  # 3 columns, 2 rows
    first = torch.load(out.with_suffix(".pt"))
    assert first.shape == (6, 1, 28, 28) and 0 <= float(first.min()) and float(first.max()) <= 1
    assert script.main(args + ["save_tensor=true", f"out={tmp_path / 'again.png'}"]) == 0
    assert torch.equal(torch.load(tmp_path / "again.pt"), first)  # seeded
    assert script.main(["prior=tv", f"out={out}"]) == 1
    assert "not a diffusion prior" in capsys.readouterr().err


def test_train_cli_smoke_exports_a_diffusion_prior(tmp_path):
    """`python train.py experiment=train/ddpm_mnist` for 5 steps with a tiny UNet, then load and denoise."""
    run_dir, export = train_tiny_unet(tmp_path, "ddpm_mnist", 5, "val_data.limit=10", "module.sample_n=4")
    assert (run_dir / "samples" / "step000005.png").is_file()
    assert (run_dir / "samples" / "final.png").is_file()
    prior = DiffusionPrior(str(export))
    card = prior.card
    assert card["recipe"] == "ddpm_mnist" and card["steps"] == 5 and card["kind"] == "diffusion"
    assert set(card["metrics"]) == {"psnr_15", "psnr_25", "psnr_50", "psnr_100"}
    assert prior.channels == 1 and prior.image_size == (28, 28) and prior.schedule.num_steps == 1000
    x = torch.rand(2, 1, 28, 28)
    out = prior.denoise(x, 0.1)
    assert out.shape == x.shape and torch.isfinite(out).all()
