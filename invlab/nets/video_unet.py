"""A conditional video ε-network for FLAIR (issue 15): the framework's UNet (invlab.nets.unet) run on every
frame, with temporal self-attention across frames and a recurrent refinement layer.

    net(x_t, t, cond) -> ε̂        x_t (B, C, T, H, W) on the [-1, 1] scale, t (B,), cond (B, Cc, T, H, W)

The condition (the degraded clip brought to the frame grid, e.g. its upsampled frames, and a per-frame
"observed" channel: invlab.train.video.condition) is concatenated to x_t as input channels. Frames are
folded into the batch for the 2-D parts. With `temporal=true`:
- `TemporalAttention` after every residual block at levels listed in `temporal_levels` and in the middle
  block: at each pixel, multi-head F.scaled_dot_product_attention over the T frames (a sinusoidal frame-
  index embedding added to its input), residual, zero-initialised output (so it starts as the identity);
- `RecurrentRefine` before the output conv: a convolutional GRU run forward over the frames on the
  full-resolution features, added back through a zero-initialised 1×1 conv.
With `temporal=false` the same network has neither: a per-frame conditional image DPM (the ablation).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invlab.errors import ShapeError
from invlab.nets.unet import UNet, norm, timestep_embedding, zero


class TemporalAttention(nn.Module):
    """Residual multi-head self-attention over the frame axis at every pixel of (B·T, C, H, W) features."""

    def __init__(self, channels: int, heads: int, groups: int, positional: bool = True):
        super().__init__()
        self.heads = max(1, math.gcd(heads, channels))
        self.positional = bool(positional)
        self.norm = norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero(nn.Conv2d(channels, channels, 1))

    def forward(self, h: Tensor, frames: int) -> Tensor:
        BT, C, H, W = h.shape
        B, T = BT // frames, frames
        u = self.norm(h)
        if self.positional:
            pos = timestep_embedding(torch.arange(T, device=h.device, dtype=torch.float32), C).to(h.dtype)
            u = u + pos.repeat(B, 1)[:, :, None, None]
        qkv = self.qkv(u).reshape(B, T, 3, self.heads, C // self.heads, H * W)
        q, k, v = qkv.permute(2, 0, 5, 3, 1, 4).unbind(0)          # each (B, HW, heads, T, d)
        out = F.scaled_dot_product_attention(q, k, v)               # attention over T
        out = out.permute(0, 3, 2, 4, 1).reshape(BT, C, H, W)       # (B, T, heads, d, HW) -> (B·T, C, H, W)
        return h + self.proj(out)


class RecurrentRefine(nn.Module):
    """A convolutional GRU over the frames of (B·T, C, H, W) features; residual, zero-initialised output."""

    def __init__(self, channels: int, hidden: int | None = None):
        super().__init__()
        self.hidden = int(hidden or channels)
        self.gates = nn.Conv2d(channels + self.hidden, 2 * self.hidden, 3, padding=1)
        self.cand = nn.Conv2d(channels + self.hidden, self.hidden, 3, padding=1)
        self.proj = zero(nn.Conv2d(self.hidden, channels, 1))

    def forward(self, h: Tensor, frames: int) -> Tensor:
        BT, C, H, W = h.shape
        seq = h.reshape(BT // frames, frames, C, H, W)
        state = h.new_zeros(seq.shape[0], self.hidden, H, W)
        outs = []
        for t in range(frames):
            f = seq[:, t]
            z, r = torch.sigmoid(self.gates(torch.cat([f, state], 1))).chunk(2, 1)
            n = torch.tanh(self.cand(torch.cat([f, r * state], 1)))
            state = (1 - z) * state + z * n
            outs.append(state)
        return h + self.proj(torch.stack(outs, 1).reshape(BT, self.hidden, H, W))


class VideoUNet(UNet):
    """UNet over frames + temporal layers. in_channels: the clip's channels; cond_channels: the condition's."""

    def __init__(self, in_channels: int = 1, cond_channels: int = 2, frames: int = 8, temporal: bool = True,
                 temporal_levels: Sequence[int] = (1, 2), channels: int = 24, channel_mult: Sequence[int] = (1, 2, 2),
                 num_res_blocks: int = 1, attention_levels: Sequence[int] = (), mid_attention: bool = True,
                 heads: int = 4, dropout: float = 0.0, groups: int = 8):
        super().__init__(in_channels=int(in_channels) + int(cond_channels), out_channels=int(in_channels),
                         channels=channels, channel_mult=channel_mult, num_res_blocks=num_res_blocks,
                         attention_levels=attention_levels, mid_attention=mid_attention, heads=heads,
                         dropout=dropout, groups=groups)
        self.in_channels = int(in_channels)            # the clip's channels (what priors check data against)
        self.cond_channels = int(cond_channels)
        self.frames = int(frames)                      # the clip length it was trained on
        self.temporal = bool(temporal)
        self.temporal_levels = tuple(int(i) for i in temporal_levels)
        if self.temporal:
            widths = [channels * int(m) for m in channel_mult]
            make = lambda w, on: TemporalAttention(w, heads, groups) if on else nn.Identity()  # noqa: E731
            self.t_down = nn.ModuleList(make(w, i in self.temporal_levels) for i, w in enumerate(widths))
            self.t_mid = make(widths[-1], True)
            self.t_up = nn.ModuleList(make(w, i in self.temporal_levels) for i, w in reversed(list(enumerate(widths))))
            self.refine = RecurrentRefine(widths[0])

    def _mixer(self, frames: int):
        """The temporal attention layer after each UNet block (UNet.features' `mix` hook)."""
        layers = {"down": self.t_down, "up": self.t_up, "mid": [self.t_mid]}

        def mix(h: Tensor, place: str, level: int) -> Tensor:
            layer = layers[place][level]
            return h if isinstance(layer, nn.Identity) else layer(h, frames)
        return mix

    def forward(self, x: Tensor, t: Tensor | float, cond: Tensor | None = None) -> Tensor:
        if x.dim() != 5:
            raise ShapeError(f"VideoUNet takes clips (B, C, T, H, W), got shape {tuple(x.shape)}.")
        B, C, T, H, W = x.shape
        if cond is None or cond.shape != (B, self.cond_channels, T, H, W):
            raise ShapeError(f"VideoUNet needs a condition of shape {(B, self.cond_channels, T, H, W)}, got "
                             f"{None if cond is None else tuple(cond.shape)}.")
        inp = torch.cat([x, cond.to(x.dtype)], 1).transpose(1, 2).reshape(B * T, C + self.cond_channels, H, W)
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        t = (t.expand(B) if t.dim() == 0 else t.reshape(B)).repeat_interleave(T)
        temb = self.time_mlp(timestep_embedding(t, self.channels).to(x.dtype))
        inp, (ph, pw) = self.pad(inp)
        h = self.features(inp, temb, mix=self._mixer(T) if self.temporal else None)
        if self.temporal:
            h = self.refine(h, T)
        out = self.conv_out(h)[..., ph // 2: ph // 2 + H, pw // 2: pw // 2 + W]
        return out.reshape(B, T, C, H, W).transpose(1, 2)
