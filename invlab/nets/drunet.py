"""DRUNet (Zhang et al. 2021, "Plug-and-Play Image Restoration with Deep Denoiser Prior"): a bias-free
UNet of residual blocks that takes a noise-level map as an extra input channel.

Each encoder level is `blocks` residual blocks then a 2×2 stride-2 conv; the decoder mirrors it with
2×2 stride-2 transposed convs; skips are added, not concatenated. Inputs of any size are
replicate-padded (right/bottom) to a multiple of `pad_multiple` (default 2^(levels−1), the least that works)
and cropped back; the published KAIR/DPIR files run with 16, as DPIR's `utils_model.test_pad` does.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from invlab.nets.layers import noise_map, pad_to_multiple


class ResBlock(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(features, features, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                                  nn.Conv2d(features, features, 3, padding=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class DRUNet(nn.Module):
    def __init__(self, in_channels: int = 1, features: Sequence[int] = (64, 128, 256, 512), blocks: int = 4,
                 residual: bool = True, pad_multiple: int | None = None):
        super().__init__()
        features = [int(f) for f in features]
        if len(features) < 2:
            raise ValueError(f"DRUNet needs at least two levels of features, got {features}.")
        self.in_channels, self.residual = in_channels, residual
        self.multiple = 2 ** (len(features) - 1)
        if pad_multiple is not None and (pad_multiple < 1 or pad_multiple % self.multiple):
            raise ValueError(f"DRUNet pad_multiple must be a multiple of {self.multiple}, got {pad_multiple}.")
        self.pad_multiple = pad_multiple or self.multiple
        self.head = nn.Conv2d(in_channels + 1, features[0], 3, padding=1, bias=False)
        self.down = nn.ModuleList(
            nn.Sequential(*[ResBlock(f) for _ in range(blocks)], nn.Conv2d(f, f_next, 2, stride=2, bias=False))
            for f, f_next in zip(features[:-1], features[1:]))
        self.body = nn.Sequential(*[ResBlock(features[-1]) for _ in range(blocks)])
        self.up = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(f_next, f, 2, stride=2, bias=False), *[ResBlock(f) for _ in range(blocks)])
            for f, f_next in zip(features[:-1], features[1:]))
        self.tail = nn.Conv2d(features[0], in_channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor, sigma: Tensor | float | None = None) -> Tensor:
        xp, (h, w) = pad_to_multiple(x, self.pad_multiple)
        h0 = self.head(torch.cat([xp, noise_map(xp, sigma)], dim=1))
        skips = [h0]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = self.body(skips[-1])
        for i in reversed(range(len(self.up))):
            y = self.up[i](y + skips[i + 1])
        out = self.tail(y + h0)
        out = xp - out if self.residual else out
        return out[..., :h, :w]
