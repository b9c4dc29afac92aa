"""The ADM UNet of guided-diffusion (Dhariwal & Nichol 2021): the network behind `ffhq_10m.pt` (DPS, DiffPIR,
DPnP, DMPlug, PnP-DM) and `256x256_diffusion_uncond.pt`. Written for invlab; module names and the order of
every submodule follow the published state dicts exactly, so those files load with strict key matching.

`ADMUNet(x, t, y=None)` takes x on the model's [-1, 1] scale, t a (B,) tensor of timesteps 0..T−1 (fractions
allowed: the sinusoidal embedding is continuous) and returns all output channels (2·C with learn_sigma:
ε first, then the variance interpolation v). `invlab.priors.zoo.adm` wraps it as a diffusion prior.

Layout facts the published files fix (see tests/fixtures/interop/README.md):
- time embedding: cos-first sinusoid of width C → Linear(C, 4C) → SiLU → Linear(4C, 4C) (`time_embed.{0,2}`);
- ResBlock = in_layers (GroupNorm32, SiLU, conv3), emb_layers (SiLU, Linear), out_layers (GroupNorm32, SiLU,
  Dropout, conv3), skip_connection (1×1 conv when widths differ); scale-shift norm multiplies by (1 + scale)
  with scale the first half of the embedding projection; up/down ResBlocks resample (nearest / 2×2 average)
  between the first norm+SiLU and the first conv, on both the branch and the skip;
- attention: GroupNorm32, `qkv` and `proj_out` as Conv1d(·, ·, 1); the legacy head order reads qkv per head as
  (heads, 3, head_dim) channels, the "new" order as (3, heads, head_dim). Both run through
  F.scaled_dot_product_attention (scale 1/√head_dim, as the reference's two factors of head_dim^(−1/4));
- GroupNorm32 computes in float32 whatever the input dtype.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invlab.nets.unet import timestep_embedding


class GroupNorm32(nn.GroupNorm):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).type(x.dtype)


def norm32(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)


class Resample(nn.Module):
    """2× nearest upsampling or 2×2 downsampling, optionally with a 3×3 conv (`conv` / `op` keys as published)."""

    def __init__(self, channels: int, up: bool, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.up, self.use_conv = up, use_conv
        out = out_channels or channels
        if up and use_conv:
            self.conv = nn.Conv2d(channels, out, 3, padding=1)
        elif not up:
            self.op = nn.Conv2d(channels, out, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        if not self.up:
            return self.op(x)
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(nn.Module):
    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 scale_shift: bool = False, up: bool = False, down: bool = False):
        super().__init__()
        out = out_channels or channels
        self.scale_shift, self.updown = scale_shift, up or down
        self.in_layers = nn.Sequential(norm32(channels), nn.SiLU(), nn.Conv2d(channels, out, 3, padding=1))
        if self.updown:
            self.h_upd, self.x_upd = Resample(channels, up, False), Resample(channels, up, False)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out if scale_shift else out))
        self.out_layers = nn.Sequential(norm32(out), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(out, out, 3, padding=1))
        self.skip_connection = nn.Identity() if out == channels else nn.Conv2d(channels, out, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.updown:
            h = self.h_upd(self.in_layers[:-1](x))
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1, new_order: bool = False):
        super().__init__()
        if num_head_channels == -1:
            self.heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"{channels} channels do not split into heads of {num_head_channels}.")
            self.heads = channels // num_head_channels
        if channels % self.heads:
            raise ValueError(f"{channels} channels do not split into {self.heads} heads.")
        self.new_order = new_order
        self.norm = norm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        B, C, *spatial = x.shape
        x = x.reshape(B, C, -1)
        qkv = self.qkv(self.norm(x))                                        # (B, 3C, T)
        d, T = C // self.heads, x.shape[-1]
        order = (B, 3, self.heads, d, T) if self.new_order else (B, self.heads, 3, d, T)
        qkv = qkv.reshape(order)
        q, k, v = (qkv.unbind(1) if self.new_order else qkv.unbind(2))      # each (B, heads, d, T)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        h = h.transpose(-1, -2).reshape(B, C, T)                            # heads back in channel order
        return (x + self.proj_out(h)).reshape(B, C, *spatial)


class EmbedSequential(nn.Sequential):
    """A Sequential whose ResBlocks also receive the time embedding (guided-diffusion's TimestepEmbedSequential)."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class ADMUNet(nn.Module):
    """guided-diffusion's UNetModel (2-D). Arguments as in its constructor; `attention_resolutions` are
    downsampling factors (image_size // resolution), as `create_model` computes them."""

    def __init__(self, image_size: int = 256, in_channels: int = 3, model_channels: int = 128, out_channels: int = 6,
                 num_res_blocks: int = 1, attention_resolutions: Sequence[int] = (16,), dropout: float = 0.0,
                 channel_mult: Sequence[float] = (1, 1, 2, 2, 4, 4), conv_resample: bool = True,
                 num_classes: int | None = None, num_heads: int = 1, num_head_channels: int = -1,
                 num_heads_upsample: int = -1, use_scale_shift_norm: bool = False, resblock_updown: bool = False,
                 use_new_attention_order: bool = False):
        super().__init__()
        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample
        self.image_size, self.in_channels, self.out_channels = int(image_size), int(in_channels), int(out_channels)
        self.model_channels, self.num_classes = int(model_channels), num_classes
        self.multiple = 2 ** (len(channel_mult) - 1)
        attn = {int(a) for a in attention_resolutions}
        emb = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        if num_classes is not None:
            self.label_emb = nn.Embedding(int(num_classes), emb)

        def res(cin, cout=None, **kw):
            return ResBlock(cin, emb, dropout, cout, use_scale_shift_norm, **kw)

        def attention(ch, heads):
            return AttentionBlock(ch, heads, num_head_channels, use_new_attention_order)

        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skips, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attn:
                    layers.append(attention(ch, num_heads))
                self.input_blocks.append(EmbedSequential(*layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Resample(ch, False, conv_resample, ch)
                self.input_blocks.append(EmbedSequential(down))
                skips.append(ch)
                ds *= 2
        self.middle_block = EmbedSequential(res(ch), attention(ch, num_heads), res(ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skips.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attn:
                    layers.append(attention(ch, heads_up))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Resample(ch, True, conv_resample, ch))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(norm32(ch), nn.SiLU(), nn.Conv2d(input_ch, out_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("pass class labels y exactly when the model is class-conditional.")
        t = t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t.reshape(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(self.time_embed[0].weight.dtype))
        if y is not None:
            emb = emb + self.label_emb(y)
        h, hs = x, []
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))


def parse_create_model(image_size: int, num_channels: int, num_res_blocks: int, channel_mult: str | Sequence = "",
                       learn_sigma: bool = False, class_cond: bool = False, use_checkpoint: bool = False,
                       attention_resolutions: str | int | Sequence = "16", num_heads: int = 1,
                       num_head_channels: int = -1, num_heads_upsample: int = -1, use_scale_shift_norm: bool = False,
                       dropout: float = 0.0, resblock_updown: bool = False, use_fp16: bool = False,
                       use_new_attention_order: bool = False, in_channels: int = 3) -> dict:
    """guided-diffusion's `create_model` keyword arguments → ADMUNet's (the published configs use these names).
    `use_checkpoint` (activation recomputation) and `use_fp16` (a cast after loading) do not change weights."""
    if channel_mult in ("", None):
        table = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
        if int(image_size) not in table:
            raise ValueError(f"no default channel_mult for image_size {image_size}; set channel_mult, e.g. '1,2,2'.")
        mult = table[int(image_size)]
    elif isinstance(channel_mult, str):
        mult = tuple(float(m) if "." in m else int(m) for m in channel_mult.split(","))
    else:
        mult = tuple(channel_mult)
    res = attention_resolutions
    res = [int(r) for r in str(res).split(",")] if isinstance(res, (str, int)) else [int(r) for r in res]
    return dict(image_size=int(image_size), in_channels=int(in_channels), model_channels=int(num_channels),
                out_channels=int(in_channels) * (2 if learn_sigma else 1), num_res_blocks=int(num_res_blocks),
                attention_resolutions=[int(image_size) // r for r in res], dropout=float(dropout),
                channel_mult=list(mult), num_classes=1000 if class_cond else None, num_heads=int(num_heads),
                num_head_channels=int(num_head_channels), num_heads_upsample=int(num_heads_upsample),
                use_scale_shift_norm=bool(use_scale_shift_norm), resblock_updown=bool(resblock_updown),
                use_new_attention_order=bool(use_new_attention_order))


def adm_from_create_model(**kwargs) -> ADMUNet:
    return ADMUNet(**parse_create_model(**kwargs))
