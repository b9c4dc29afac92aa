"""DnCNN (Zhang et al. 2017): a plain stack of 3×3 conv + ReLU layers with residual learning.

Options: `sigma_input` concatenates a noise-level map as an extra input channel (one network for all
noise levels, told the level); `spectral_norm` bounds every conv's operator norm by 1 so the conv
stack N is 1-Lipschitz: the denoiser is then nonexpansive with `residual=False`, and with
`residual=True` its residual x − D(x) = N(x) is (the condition of Ryu et al. 2019 for PnP convergence).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from invlab.nets.layers import conv, noise_map


class DnCNN(nn.Module):
    def __init__(self, in_channels: int = 1, depth: int = 17, features: int = 64, spectral_norm: bool = False,
                 residual: bool = True, sigma_input: bool = False, bias: bool = True):
        super().__init__()
        if depth < 2:
            raise ValueError(f"DnCNN needs depth >= 2, got {depth}.")
        self.in_channels, self.residual, self.sigma_input = in_channels, residual, sigma_input
        layers: list[nn.Module] = [conv(in_channels + int(sigma_input), features, bias=bias,
                                        spectral_norm=spectral_norm), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [conv(features, features, bias=bias, spectral_norm=spectral_norm), nn.ReLU(inplace=True)]
        layers.append(conv(features, in_channels, bias=bias, spectral_norm=spectral_norm))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor, sigma: Tensor | float | None = None) -> Tensor:
        inp = torch.cat([x, noise_map(x, sigma)], dim=1) if self.sigma_input else x
        out = self.body(inp)
        return x - out if self.residual else out
