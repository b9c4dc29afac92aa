"""Blur kernels: Gaussian, uniform (box) and random camera-shake (motion) kernels.

All return a float32 tensor of shape (size, size) that sums to one. The kernel centre is the pixel
(size // 2, size // 2), the convention of `scipy.ndimage.convolve` for odd and even sizes alike.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from invlab.errors import ConfigError
from invlab.utils.config import whole_number

SIZE_KEY = "the kernel size (task.operator.kernel_size)"


def gaussian_kernel(size: int, std: float) -> Tensor:
    """Isotropic Gaussian sampled at pixel centres, truncated to size × size and renormalised."""
    size = whole_number(size, SIZE_KEY, minimum=1)
    if not std > 0:
        raise ConfigError(f"the Gaussian kernel's std (task.operator.kernel_std) must be > 0, got {std}.")
    t = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-0.5 * (t / std) ** 2)
    k = g[:, None] * g[None, :]
    return (k / k.sum()).float()


def uniform_kernel(size: int) -> Tensor:
    """size × size box average."""
    size = whole_number(size, SIZE_KEY, minimum=1)
    return torch.full((size, size), 1.0 / size**2)


def motion_kernel(size: int, intensity: float = 0.5, generator: torch.Generator | None = None,
                  steps: int | None = None) -> Tensor:
    """A random camera-shake kernel: a rasterised random-walk trajectory.

    The camera moves with constant speed; its heading performs a random walk whose per-step spread grows
    with `intensity` (0: a straight line, 1: strongly curved, loopy paths), and the speed itself jitters
    by up to `intensity`. The path is centred on its centroid, scaled so its extent is a random
    fraction (0.5–1) of the kernel support, and splatted bilinearly onto the grid (which keeps thin
    diagonal paths anti-aliased). The result sums to one.
    """
    size = whole_number(size, SIZE_KEY, minimum=3)
    if not 0.0 <= intensity <= 1.0:
        raise ConfigError(f"the motion kernel's intensity (task.operator.intensity) must lie in [0, 1], "
                          f"got {intensity}.")
    steps = steps or 8 * size
    rand = lambda *shape: torch.rand(*shape, generator=generator, dtype=torch.float64)  # noqa: E731
    randn = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64)  # noqa: E731

    heading0 = 2 * math.pi * rand(1)
    # a heading spread of ~intensity·2π over the whole path: std per step scales as 1/sqrt(steps)
    turns = intensity * 2 * math.pi / math.sqrt(steps) * randn(steps)
    heading = heading0 + torch.cumsum(turns, 0)
    speed = 1.0 + intensity * (rand(steps) - 0.5)
    path = torch.cumsum(torch.stack([speed * torch.cos(heading), speed * torch.sin(heading)], 1), 0)

    path = path - path.mean(0)
    radius = path.norm(dim=1).max().clamp_min(1e-12)
    extent = 0.5 + 0.5 * rand(1)
    half = (size - 1) / 2 - 1.0  # keep one pixel free so the bilinear splat stays inside
    path = path / radius * half * extent + size // 2

    kernel = torch.zeros(size * size, dtype=torch.float64)
    base = path.floor()
    frac = path - base
    for dr in (0, 1):
        for dc in (0, 1):
            w = (frac[:, 0] if dr else 1 - frac[:, 0]) * (frac[:, 1] if dc else 1 - frac[:, 1])
            r = (base[:, 0].long() + dr).clamp(0, size - 1)
            c = (base[:, 1].long() + dc).clamp(0, size - 1)
            kernel.index_add_(0, r * size + c, w)
    kernel = kernel.view(size, size)
    return (kernel / kernel.sum()).float()
