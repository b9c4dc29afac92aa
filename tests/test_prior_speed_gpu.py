"""The CUDA paths of the priors' speed switches (invlab/priors/speed.py): compile, bf16/fp16 autocast and CUDA
graphs (`prior.compile=true prior.compile_mode=reduce-overhead`) for the MNIST UNet's fixed-shape sampler loop.
Marked `gpu`: skipped without CUDA (`scripts/gpu_check.sh` runs them on a lent GPU). TF32 is switched off so the
eager reference is plain float32."""
from __future__ import annotations

import pytest
import torch

from invlab.priors.diffusion import DiffusionPrior
from invlab.priors.learned import LearnedDenoiser

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
TOL = 1e-4  # float32 on CUDA: compiled kernels reorder sums (CPU tests hold 1e-5)


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def psnr(a, b) -> float:
    return float(10 * torch.log10(1.0 / (a - b).square().mean()))


@pytest.mark.parametrize("name", ["dncnn_gray", "drunet_gray"])
def test_cuda_compiled_and_reduced_precision_denoisers(name):
    x = torch.rand(3, 1, 128, 128, generator=torch.Generator().manual_seed(0)).cuda()
    eager = LearnedDenoiser(name, device="cuda").eval()
    with torch.no_grad():
        ref = eager.denoise(x, 25 / 255)
        fast = LearnedDenoiser(name, device="cuda", compile=True).eval()
        assert (fast.denoise(x, 25 / 255) - ref).abs().max() <= TOL
        assert (fast.denoise(x[:2], 25 / 255) - ref[:2]).abs().max() <= TOL  # another batch size
        for precision in ("bf16", "fp16"):
            low = LearnedDenoiser(name, device="cuda", precision=precision).eval().denoise(x, 25 / 255)
            assert low.dtype == torch.float32 and psnr(low, ref) >= 40.0, (precision, psnr(low, ref))


def test_cuda_graphs_for_the_mnist_unet_sampler_loop():
    """reduce-overhead records CUDA graphs of the ddpm_mnist UNet and replays them over a DDIM loop: the samples
    equal eager, no graph was skipped, and the outputs are not overwritten between steps."""
    from torch._dynamo.utils import counters
    from torch._inductor.cudagraph_trees import get_manager

    eager = DiffusionPrior("ddpm_mnist", device="cuda").eval()
    graphs = DiffusionPrior("ddpm_mnist", device="cuda", compile=True, compile_mode="reduce-overhead").eval()
    g = lambda: torch.Generator(device="cuda").manual_seed(0)  # noqa: E731
    skips = counters["inductor"]["cudagraph_skips"]
    ref = eager.sample(8, steps=20, generator=g())
    out = graphs.sample(8, steps=20, generator=g())
    assert (out - ref).abs().max() <= 1e-3  # 20 steps accumulate the kernels' float32 reordering
    assert counters["inductor"]["cudagraph_skips"] == skips
    manager = get_manager(torch.cuda.current_device(), create_if_none_exists=False)
    assert manager is not None and len(manager.roots) >= 1
    # two ε calls kept alive at once: the first must not change when the graph is replayed for the second
    with torch.no_grad():
        z = torch.randn(8, 1, 28, 28, device="cuda")
        e1 = graphs.eps(z, 500.0)
        keep = e1.clone()
        graphs.eps(torch.randn_like(z), 100.0)
        assert torch.equal(e1, keep)
        assert (e1 - eager.eps(z, 500.0)).abs().max() <= TOL


def test_cuda_compiled_prior_gradients_for_dps():
    """DPS backpropagates through the network: the compiled prior's input gradient equals eager's."""
    eager = DiffusionPrior("ddpm_mnist", device="cuda").eval()
    fast = DiffusionPrior("ddpm_mnist", device="cuda", compile=True, precision="fp32").eval()
    x = torch.randn(4, 1, 28, 28, device="cuda", requires_grad=True)
    (g_eager,) = torch.autograd.grad(eager.x0(x, 300.0).square().sum(), x)
    (g_fast,) = torch.autograd.grad(fast.x0(x, 300.0).square().sum(), x)
    assert (g_fast - g_eager).abs().max() <= 1e-3 * g_eager.abs().max()
