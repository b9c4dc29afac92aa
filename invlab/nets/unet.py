"""A time-conditioned UNet for diffusion models (DDPM ε-prediction): `net(x_t, t) -> ε̂`.

Unlike the denoisers in this package it is *not* called with an image in [0, 1] and a noise level: x_t is
on the diffusion model's [-1, 1] scale and t a (B,) tensor of timesteps (fractions allowed). The wrapper
that turns it into a [0, 1]-units denoiser is `invlab.priors.diffusion.DiffusionPrior`.

Layout (DDPM / guided-diffusion style): sinusoidal time embedding → MLP; per level `num_res_blocks`
residual blocks (GroupNorm, SiLU, 3×3 convs, the time embedding added between the convs), optional
multi-head self-attention at the levels listed in `attention_levels` (level i works at H/2^i), stride-2
conv downsampling; a middle block (res, attention, res); a mirrored decoder on concatenated skips with
nearest-neighbour upsampling. Any H, W works: the input is padded (replicate, both sides) to a multiple of
2^(levels−1) and the output cropped back (28×28 MNIST runs at 32×32 with three levels).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """(B, dim) sinusoidal embedding of (possibly fractional) timesteps, as in Transformer/DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def zero(module: nn.Module) -> nn.Module:
    """Zero-initialised last layer of a residual branch: each block starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb_dim, cout)
        self.norm2, self.drop = norm(cout, groups), nn.Dropout(dropout)
        self.conv2 = zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the H·W positions, residual."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = max(1, math.gcd(heads, channels))
        self.norm = norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class Level(nn.Module):
    """Residual blocks (each optionally followed by attention) at one resolution."""

    def __init__(self, cins: Sequence[int], cout: int, temb_dim: int, groups: int, dropout: float,
                 attention: bool, heads: int):
        super().__init__()
        self.res = nn.ModuleList(ResBlock(c, cout, temb_dim, groups, dropout) for c in cins)
        self.attn = nn.ModuleList(Attention(cout, heads, groups) if attention else nn.Identity() for _ in cins)


class UNet(nn.Module):
    """ε-prediction UNet. `channels` at level 0, `channels·channel_mult[i]` at level i.

    Parameters: in_channels/out_channels (image channels; out defaults to in), channels, channel_mult,
    num_res_blocks, attention_levels (level indices with self-attention, plus the middle block when
    `mid_attention`), heads, dropout, groups (GroupNorm groups, reduced to a divisor of each width).
    """

    def __init__(self, in_channels: int = 1, out_channels: int | None = None, channels: int = 32,
                 channel_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 2,
                 attention_levels: Sequence[int] = (2,), mid_attention: bool = True, heads: int = 4,
                 dropout: float = 0.0, groups: int = 8):
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels or in_channels)
        self.levels = len(channel_mult)
        if self.levels < 1 or any(a not in range(self.levels) for a in attention_levels):
            raise ValueError(f"attention_levels {list(attention_levels)} must index channel_mult {list(channel_mult)}.")
        widths = [channels * int(m) for m in channel_mult]
        temb_dim = 4 * channels
        self.channels = channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.conv_in = nn.Conv2d(self.in_channels, channels, 3, padding=1)

        kw = dict(temb_dim=temb_dim, groups=groups, dropout=dropout, heads=heads)
        skips, c = [channels], channels
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, w in enumerate(widths):
            self.down.append(Level([c] + [w] * (num_res_blocks - 1), w, attention=i in attention_levels, **kw))
            c = w
            skips += [w] * num_res_blocks
            if i < self.levels - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid1 = ResBlock(c, c, temb_dim, groups, dropout)
        self.mid_attn = Attention(c, heads, groups) if mid_attention else nn.Identity()
        self.mid2 = ResBlock(c, c, temb_dim, groups, dropout)

        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            cins = []
            for _ in range(num_res_blocks + 1):
                cins.append(c + skips.pop())
                c = w
            self.up.append(Level(cins, w, attention=i in attention_levels, **kw))
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = norm(c, groups)
        self.conv_out = zero(nn.Conv2d(c, self.out_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        t = t.expand(x.shape[0]) if t.dim() == 0 else t.reshape(x.shape[0])
        temb = self.time_mlp(timestep_embedding(t, self.channels).to(x.dtype))
        H, W = x.shape[-2:]
        x, (ph, pw) = self.pad(x)
        out = self.conv_out(self.features(x, temb))
        return out[..., ph // 2: ph // 2 + H, pw // 2: pw // 2 + W]

    def pad(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Centred replicate padding of H, W to a multiple of 2^(levels−1) (cropped back by the caller)."""
        m = 2 ** (self.levels - 1)
        ph, pw = (-x.shape[-2]) % m, (-x.shape[-1]) % m
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")
        return x, (ph, pw)

    def features(self, x: Tensor, temb: Tensor, mix: Callable[[Tensor, str, int], Tensor] | None = None) -> Tensor:
        """conv_in → down → middle → up → SiLU(norm_out), before conv_out. `mix(h, place, level)`, if given, runs
        after every down/up block ("down"/"up", its level) and between the middle blocks ("mid", 0): the hook
        through which VideoUNet mixes frames."""
        mix = mix or (lambda h, place, level: h)
        h = self.conv_in(x)
        hs = [h]
        for i, level in enumerate(self.down):
            for res, attn in zip(level.res, level.attn):
                h = mix(attn(res(h, temb)), "down", i)
                hs.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid2(mix(self.mid_attn(self.mid1(h, temb)), "mid", 0), temb)
        for j, level in enumerate(self.up):
            for res, attn in zip(level.res, level.attn):
                h = mix(attn(res(torch.cat([h, hs.pop()], 1), temb)), "up", j)
            if j < self.levels - 1:
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return F.silu(self.norm_out(h))
