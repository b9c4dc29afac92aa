"""The time-conditioned diffusion UNet: shapes at any size, time conditioning, gradients, attention options."""
import pytest
import torch

from invlab.nets.unet import UNet, timestep_embedding

TINY = dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,), heads=2, groups=4)


def randomise_zero_inits(net: torch.nn.Module) -> torch.nn.Module:
    """The residual branches and output conv start at zero (the net starts as ε̂ = 0); give them weights."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return net


@pytest.mark.parametrize("size", [(28, 28), (32, 32), (25, 31), (8, 8)])
def test_shapes(size):
    net = UNet(**TINY)
    x = torch.randn(2, 1, *size)
    assert net(x, torch.tensor([0.0, 999.0])).shape == x.shape


def test_three_levels_at_mnist_size_and_colour():
    net = UNet(in_channels=3, channels=8, channel_mult=(1, 2, 2), num_res_blocks=2, attention_levels=(2,), groups=4)
    x = torch.randn(3, 3, 28, 28)
    out = net(x, torch.tensor([1.0, 2.0, 3.0]))
    assert out.shape == x.shape and torch.all(out == 0)  # zero-initialised output conv
    assert net.in_channels == 3 and net.out_channels == 3


def test_time_conditioning_changes_output():
    net = randomise_zero_inits(UNet(**TINY)).eval()
    x = torch.randn(1, 1, 28, 28).repeat(3, 1, 1, 1)
    out = net(x, torch.tensor([10.0, 10.0, 500.0]))
    assert torch.allclose(out[0], out[1])
    assert (out[0] - out[2]).abs().max() > 1e-3
    # a scalar t broadcasts; fractional t is accepted and lies between its neighbours' outputs smoothly
    assert torch.allclose(net(x[:1], 10.0), out[:1], atol=1e-6)
    mid = net(x[:1], 10.5)
    assert (mid - out[:1]).abs().max() < (out[0] - out[2]).abs().max()


def test_gradients_flow_to_input_and_weights():
    net = randomise_zero_inits(UNet(**TINY))
    x = torch.randn(2, 1, 12, 12, requires_grad=True)
    net(x, torch.tensor([3.0, 7.0])).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())


def test_no_attention_and_config_errors():
    net = UNet(channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, attention_levels=(), mid_attention=False, groups=4)
    assert not any(type(m).__name__ == "Attention" for m in net.modules())
    assert net(torch.randn(1, 1, 28, 28), 5).shape == (1, 1, 28, 28)
    with pytest.raises(ValueError):
        UNet(channel_mult=(1, 2), attention_levels=(2,))


def test_timestep_embedding():
    e = timestep_embedding(torch.tensor([0.0, 1.0, 999.0]), 16)
    assert e.shape == (3, 16) and torch.allclose(e[0, :8], torch.ones(8)) and torch.allclose(e[0, 8:], torch.zeros(8))
    assert timestep_embedding(torch.tensor([1.0]), 7).shape == (1, 7)
