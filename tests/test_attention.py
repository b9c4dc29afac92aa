"""Every UNet's self-attention (invlab/nets/unet.py `Attention`, invlab/nets/adm.py `AttentionBlock`, both
through F.scaled_dot_product_attention) equals explicit attention softmax(QᵀK/√d)V written here, to 1e-5 in
float32 (relative to the output scale once it exceeds 1), for both of ADM's qkv head orders, alone and
inside whole networks (a forward hook on every attention module)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from invlab.nets.adm import ADMUNet, AttentionBlock
from invlab.nets.unet import Attention, UNet

TOL = 1e-5


def explicit_attention(q, k, v):
    """q, k, v: (B, heads, d, T) channel-major. Returns (B, heads, d, T): out[:, :, :, t] = Σ_s w_ts v[:, :, :, s]
    with w_t· = softmax_s(q_t · k_s / √d)."""
    d = q.shape[2]
    logits = torch.einsum("bhdt,bhds->bhts", q, k) / math.sqrt(d)
    w = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    w = w / w.sum(dim=-1, keepdim=True)
    return torch.einsum("bhts,bhds->bhdt", w, v)


def split_heads(qkv, heads, order):
    """qkv (B, 3C, T) → q, k, v each (B, heads, d, T). order "qkv_heads": channels laid out (3, heads, d)
    (invlab's UNet and ADM's new order); "heads_qkv": (heads, 3, d) (ADM's legacy QKVAttentionLegacy)."""
    B, C3, T = qkv.shape
    d = C3 // 3 // heads
    if order == "qkv_heads":
        q, k, v = (qkv[:, i * heads * d:(i + 1) * heads * d].reshape(B, heads, d, T) for i in range(3))
    else:
        per_head = qkv.reshape(B, heads, 3 * d, T)
        q, k, v = per_head[:, :, :d], per_head[:, :, d:2 * d], per_head[:, :, 2 * d:]
    return q, k, v


def reference_unet_attention(block: Attention, x):
    B, C, H, W = x.shape
    qkv = block.qkv(block.norm(x)).reshape(B, 3 * C, H * W)
    h = explicit_attention(*split_heads(qkv, block.heads, "qkv_heads")).reshape(B, C, H, W)
    return x + block.proj(h)


def reference_adm_attention(block: AttentionBlock, x):
    B, C, *spatial = x.shape
    flat = x.reshape(B, C, -1)
    qkv = block.qkv(block.norm(flat))
    order = "qkv_heads" if block.new_order else "heads_qkv"
    h = explicit_attention(*split_heads(qkv, block.heads, order)).reshape(B, C, -1)
    return (flat + block.proj_out(h)).reshape(B, C, *spatial)


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Non-trivial weights everywhere (the UNet zero-initialises its output projections, which would hide
    the attention entirely)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


def max_err(a, b):
    """Largest deviation, relative to the output's scale once that exceeds 1 (activations deep inside a
    random-weight network reach the hundreds; float32 carries ~7 digits of them)."""
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("heads", [1, 4])
def test_unet_attention_equals_explicit(heads):
    block = randomize(Attention(channels=16, heads=heads, groups=4), 0).eval()
    x = torch.randn(2, 16, 5, 7, generator=torch.Generator().manual_seed(1))   # H ≠ W catches transposes
    with torch.no_grad():
        out, ref = block(x), reference_unet_attention(block, x)
    assert block.heads == heads
    assert max_err(out, x) > 0.1   # the attention branch is really there
    assert max_err(out, ref) <= TOL


@pytest.mark.parametrize("new_order", [False, True])
@pytest.mark.parametrize("head_args", [dict(num_heads=4), dict(num_head_channels=32)])
def test_adm_attention_equals_explicit_in_both_head_orders(new_order, head_args):
    block = randomize(AttentionBlock(64, new_order=new_order, **head_args), 2).eval()
    x = torch.randn(2, 64, 5, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out, ref = block(x), reference_adm_attention(block, x)
        block.new_order = not new_order                       # the other layout must give another answer
        other = block(x)
    assert max_err(out, ref) <= TOL
    assert max_err(out, other) > 1e-2


def check_every_attention(net: nn.Module, cls, reference, *inputs):
    """Run `net` once with a hook on every `cls` module comparing it with `reference`; return the count."""
    errors = []

    def hook(module, args, output):
        errors.append(max_err(output, reference(module, args[0])))

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, cls)]
    with torch.no_grad():
        net(*inputs)
    for h in handles:
        h.remove()
    assert errors and len(errors) == len(handles)
    assert max(errors) <= TOL, errors
    return len(errors)


def test_every_attention_inside_the_diffusion_unet():
    net = randomize(UNet(in_channels=1, channels=16, channel_mult=(1, 2), num_res_blocks=1,
                         attention_levels=(0, 1), heads=2, groups=4), 4).eval()
    x = torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    n = check_every_attention(net, Attention, reference_unet_attention, x, torch.tensor([3.0, 500.0]))
    assert n >= 3   # encoder, middle and decoder attention all ran


@pytest.mark.parametrize("new_order", [False, True])
def test_every_attention_inside_adm(new_order):
    net = ADMUNet(image_size=16, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1,
                  attention_resolutions=(2,), channel_mult=(1, 2), num_heads=2,
                  use_new_attention_order=new_order)
    net = randomize(net, 6).eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    n = check_every_attention(net, AttentionBlock, reference_adm_attention, x, torch.tensor([10.0]))
    assert n >= 3
