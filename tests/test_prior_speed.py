"""Speed switches of the priors (invlab/priors/speed.py): prior.compile / compile_mode / precision / channels_last.

Each switch is checked against the same prior run eagerly in float32 (the reference): compiled and channels_last
outputs equal it to 1e-5; bf16 outputs are close to it within a stated tolerance and come back in float32; the
solver's own arithmetic keeps its dtypes. Compiling costs minutes per network on a loaded 2-core CPU (the
inductor cache, ~/.cache/invlab/inductor, makes reruns cheaper): one tiny DnCNN compile test runs in `make
test`; DRUNet, the diffusion UNet and ADM are `slow` (times in their docstrings).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from invlab.errors import ConfigError
from invlab.priors.checkpoint import build_net, save_checkpoint
from invlab.priors.diffusion import DiffusionPrior
from invlab.priors.learned import LearnedDenoiser
from invlab.utils.config import build

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5
TINY_DNCNN = dict(_target_="invlab.nets.dncnn.DnCNN", in_channels=1, depth=3, features=8, sigma_input=True)
SMALL_DRUNET = dict(_target_="invlab.nets.drunet.DRUNet", in_channels=1, features=[8, 16, 32, 64], blocks=1)
TINY_UNET = dict(_target_="invlab.nets.unet.UNet", in_channels=1, channels=8, channel_mult=[1, 2],
                 num_res_blocks=1, attention_levels=[1], heads=2, groups=4)
NETWORK_TARGETS = ("invlab.priors.learned.LearnedDenoiser", "invlab.priors.diffusion.DiffusionPrior",
                   "invlab.priors.zoo.adm.adm_prior", "invlab.priors.zoo.kair.DRUNetPrior",
                   "invlab.priors.zoo.kair.DnCNNPrior", "invlab.priors.zoo.diffusers.DiffusersPrior")


def checkpoint(tmp_path: Path, arch: dict, seed: int = 0) -> str:
    torch.manual_seed(seed)
    net = build_net(arch)
    with torch.no_grad():  # random, not zero-initialised: every layer must matter
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return str(save_checkpoint(tmp_path / "net.safetensors", net, arch, {"channels": 1}))


def unet_prior(**speed) -> DiffusionPrior:
    torch.manual_seed(0)
    net = build_net(TINY_UNET)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return DiffusionPrior(net=net, image_size=(16, 16), **speed).eval()


def graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


# ---- options ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override,match", [
    ("precision=fp8", "prior.precision must be one of fp32, bf16, fp16"),
    ("compile_mode=fast", "prior.compile_mode must be one of default, reduce-overhead, max-autotune"),
    ("compile=maybe", "prior.compile must be true or false"),
    ("channels_last=1", "prior.channels_last must be true or false"),
])
def test_a_bad_speed_option_is_one_sentence(override, match):
    cfg = OmegaConf.load(ROOT / "conf" / "prior" / "dncnn_gray.yaml")
    cfg.merge_with_dotlist([override])
    with pytest.raises(ConfigError, match=match):
        build(cfg)


def test_every_network_prior_config_has_the_speed_keys():
    found = 0
    for path in sorted((ROOT / "conf" / "prior").glob("*.yaml")):
        cfg = OmegaConf.load(path)
        target = cfg.get("_target_") or OmegaConf.load(path.parent / f"{cfg.defaults[0]}.yaml")._target_
        if target not in NETWORK_TARGETS:
            continue
        found += 1
        if "defaults" in cfg:  # adm_ffhq / adm_imagenet inherit adm.yaml's keys
            cfg = OmegaConf.merge(OmegaConf.load(path.parent / f"{cfg.defaults[0]}.yaml"), cfg)
        assert {"compile", "compile_mode", "precision", "channels_last"} <= set(cfg), path.name
        assert cfg.compile_mode == "default" and cfg.precision in ("fp32", "bf16"), path.name
    assert found >= 15


# ---- compile ---------------------------------------------------------------------------------------------

def test_compiled_dncnn_equals_eager_and_a_new_batch_size_does_not_recompile(tmp_path):
    """In `make test`: 55 s on a cold inductor cache, 20-70 s warm (2-core CPU at load average 14-20)."""
    ckpt = checkpoint(tmp_path, TINY_DNCNN)
    eager, fast = LearnedDenoiser(ckpt).eval(), LearnedDenoiser(ckpt, compile=True).eval()
    assert fast.speed.describe() == "compiled (default)"
    torch._dynamo.reset()
    with torch.no_grad():
        x, sigma = torch.rand(2, 1, 20, 24), torch.tensor([0.05, 0.2])
        assert (fast.denoise(x, sigma) - eager.denoise(x, sigma)).abs().max() <= TOL
        first = graphs()
        assert fast.speed.compile_seconds > 0
        for b in (3, 5):  # the last batch of a data set is often smaller or larger: same graph
            xb = torch.rand(b, 1, 20, 24)
            assert (fast.denoise(xb, 0.1) - eager.denoise(xb, 0.1)).abs().max() <= TOL
        assert graphs() == first
    assert fast.stats.nfe == 3
    # a second prior of the same architecture with other weights (dncnn_mnist beside dncnn_mnist04) shares the
    # compiled code but must not share the first one's (frozen) weights
    other = checkpoint(tmp_path / "other", TINY_DNCNN, seed=1)
    with torch.no_grad():
        x = torch.rand(2, 1, 20, 24)
        ref = LearnedDenoiser(other).eval().denoise(x, 0.1)
        assert (LearnedDenoiser(other, compile=True).eval().denoise(x, 0.1) - ref).abs().max() <= TOL
        assert (fast.denoise(x, 0.1) - ref).abs().max() > 1e-3
    # gradients with respect to the input flow through the compiled net (DPS, RED by autograd)
    x = torch.rand(2, 1, 20, 24, requires_grad=True)
    (g_fast,) = torch.autograd.grad(fast.denoise(x, 0.1).square().sum(), x)
    (g_eager,) = torch.autograd.grad(eager.denoise(x, 0.1).square().sum(), x)
    assert (g_fast - g_eager).abs().max() <= TOL


@pytest.mark.slow
def test_compiled_drunet_equals_eager(tmp_path):
    """slow: 237 s on a cold inductor cache (2-core CPU at load average ~20)."""
    ckpt = checkpoint(tmp_path, SMALL_DRUNET)
    eager, fast = LearnedDenoiser(ckpt).eval(), LearnedDenoiser(ckpt, compile=True).eval()
    with torch.no_grad():
        for b in (2, 3):
            x = torch.rand(b, 1, 32, 32)
            assert (fast.denoise(x, 0.1) - eager.denoise(x, 0.1)).abs().max() <= TOL


@pytest.mark.slow
def test_compiled_diffusion_unet_equals_eager():
    """slow: 656 s cold (2-core CPU at load average ~20). ε at fractional t, Tweedie denoise, a DDIM loop."""
    eager, fast = unet_prior(), unet_prior(compile=True)
    with torch.no_grad():
        x, t = torch.randn(2, 1, 16, 16), torch.tensor([10.5, 700.0])
        assert (fast.eps(x, t) - eager.eps(x, t)).abs().max() <= TOL
        assert (fast.denoise(x.sigmoid(), 0.1) - eager.denoise(x.sigmoid(), 0.1)).abs().max() <= TOL
        g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
        assert (fast.sample(3, steps=4, generator=g()) - eager.sample(3, steps=4, generator=g())).abs().max() <= TOL


@pytest.mark.slow
def test_compiled_adm_equals_eager_through_the_config_path():
    """slow: 367 s cold (2-core CPU at load ~20). The adm_small_a fixture (scale-shift, up/down, attention)."""
    from test_zoo_adm import small_prior

    eager, io = small_prior("a")
    fast = build(OmegaConf.merge(_adm_cfg("a"), {"compile": True}))
    with torch.no_grad():
        x, t = io["x"], io["t"]
        assert (fast.eps(x, t) - eager.eps(x, t)).abs().max() <= TOL


def _adm_cfg(name: str):
    from test_zoo_adm import FIX, arch_overrides, compose_prior

    io = torch.load(FIX / f"adm_small_{name}_io.pt", weights_only=True)
    return compose_prior("prior=adm", f"prior.checkpoint={FIX / f'adm_small_{name}_state_dict.pt'}",
                         *arch_overrides(io["kwargs"]))


# ---- memory layout and precision ------------------------------------------------------------------------

@pytest.mark.parametrize("arch", [TINY_DNCNN, SMALL_DRUNET], ids=["dncnn", "drunet"])
def test_channels_last_equals_eager(tmp_path, arch):
    ckpt = checkpoint(tmp_path, arch)
    eager, fast = LearnedDenoiser(ckpt).eval(), LearnedDenoiser(ckpt, channels_last=True).eval()
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.net.parameters() if p.dim() == 4)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        out = fast.denoise(x, 0.1)
        assert out.is_contiguous() and (out - eager.denoise(x, 0.1)).abs().max() <= TOL


def test_channels_last_unet_equals_eager():
    eager, fast = unet_prior(), unet_prior(channels_last=True)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3.0, 500.0])
    with torch.no_grad():
        assert (fast.eps(x, t) - eager.eps(x, t)).abs().max() <= TOL


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / (a - b).square().mean()))


def test_bf16_shipped_denoisers_are_close_to_fp32_and_return_float32():
    """Stated tolerance: the bf16 output is within 45 dB PSNR of the fp32 output (max abs error < 0.02) for the
    shipped dncnn_gray and drunet_gray on a 64² crop of camera at σ = 25/255."""
    from invlab.data.datasets import gray_test

    x0 = gray_test(size=64).images[:1]
    y = (x0 + 25 / 255 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))).float()
    for name in ("dncnn_gray", "drunet_gray"):
        fp32, bf16 = LearnedDenoiser(name).eval(), LearnedDenoiser(name, precision="bf16").eval()
        with torch.no_grad():
            a, b = fp32.denoise(y, 25 / 255), bf16.denoise(y, 25 / 255)
        assert b.dtype == torch.float32 and b.shape == a.shape
        assert 0 < (a - b).abs().max() < 0.02, name  # not the fp32 path in disguise, and close
        assert psnr(a, b) >= 45.0, (name, psnr(a, b))


def test_bf16_runs_inside_the_network_only():
    """The convs run in bf16 (autocast inside the prior) while the prior's output, the schedule and the solver's
    iterates stay in their own dtypes (float32 images, float64 schedule)."""
    prior = unet_prior(precision="bf16")
    seen = []
    prior.net.conv_in.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    with torch.no_grad():
        eps = prior.eps(torch.randn(2, 1, 16, 16), torch.tensor([5.0, 50.0]))
        sample = prior.sample(2, steps=3, generator=torch.Generator().manual_seed(0))
    assert seen[0] == (torch.float32, torch.bfloat16)  # the conv's input is the solver's, its arithmetic bf16
    assert eps.dtype == torch.float32 and sample.dtype == torch.float32
    assert prior.schedule.alphas_cumprod.dtype == torch.float64 and prior.schedule.sigmas.dtype == torch.float64

    from invlab.utils.config import load_option  # a PnP solver: its FFT prox and iterates stay float32

    task = build(load_option("task", "deblur"))
    x = torch.rand(1, 1, 32, 32)
    A, y = task.measure(x, [0], seed=0)
    res = build(load_option("solver", "pnp_admm", ["iters=2"]))(y, A, LearnedDenoiser("dncnn_gray",
                                                                                       precision="bf16"))
    assert res.x.dtype == torch.float32 and res.nfe == 2


def test_the_compile_cache_is_persistent_even_after_lightning_set_its_temp_default(monkeypatch, tmp_path):
    """Importing lightning writes inductor's /tmp default into TORCHINDUCTOR_CACHE_DIR; that must not count as
    the user's choice, while a directory the user sets does."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir as torch_default

    from invlab.priors import speed

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", torch_default())
    assert speed.enable_compile_cache() == tmp_path / ".cache" / "invlab" / "inductor"
    assert Path(__import__("os").environ["TORCHINDUCTOR_CACHE_DIR"]) == tmp_path / ".cache" / "invlab" / "inductor"
    mine = tmp_path / "mine"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(mine))
    assert speed.enable_compile_cache() == mine and mine.is_dir()
