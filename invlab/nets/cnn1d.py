"""A 1-D denoising CNN for spectra (B, C, L): the network of TVCondNet (Zou et al. 2024) and its baseline.

A DnCNN-style stack of dilated Conv1d + ReLU layers with residual learning, out = y − N(input). With
`condition=true` the input is the noisy spectrum *and* a condition of the same shape (TVCondNet: the
spectrum's TV-denoised version), concatenated as channels; with `condition=false` it is the noisy spectrum
alone. Both variants are otherwise identical (same depth, width, kernel, dilations), so the comparison
isolates what the condition adds. The condition is computed outside the network (the exact TV prox is
not a torch op): `net(y, cond)`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class CNN1D(nn.Module):
    def __init__(self, in_channels: int = 1, depth: int = 10, features: int = 48, kernel_size: int = 5,
                 dilations: Sequence[int] = (1, 2, 4, 8), condition: bool = False):
        super().__init__()
        if depth < 2:
            raise ValueError(f"CNN1D needs depth >= 2, got {depth}.")
        if kernel_size % 2 != 1:
            raise ValueError(f"CNN1D needs an odd kernel_size, got {kernel_size}.")
        self.in_channels, self.condition = int(in_channels), bool(condition)
        dil = [int(dilations[i % len(dilations)]) for i in range(depth)]
        chans = [in_channels * (2 if condition else 1)] + [features] * (depth - 1) + [in_channels]
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Conv1d(chans[i], chans[i + 1], kernel_size, padding=dil[i] * (kernel_size // 2),
                                    dilation=dil[i], padding_mode="reflect"))
            if i < depth - 1:
                layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)

    def forward(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.condition:
            if cond is None or cond.shape != y.shape:
                raise ValueError(f"this CNN1D is conditioned: call net(y, cond) with cond shaped like y {tuple(y.shape)}.")
            inp = torch.cat([y, cond], dim=1)
        else:
            inp = y
        return y - self.body(inp)
