"""Synthetic blur kernels as a dataset, for training a kernel denoiser (the θ-prior of BC-PnP).

Each item is a random kernel of size × size, nonnegative and summing to one, drawn from a mixture of
anisotropic Gaussians (random std per axis and random rotation) and camera-shake motion kernels
(`invlab.ops.kernels.motion_kernel`, random intensity).

Normalisation (what the kernel denoiser sees): kernels are tiny numbers (a 25×25 kernel that sums to
one has a mean of 1/625), so a noise level σ in kernel units would mean nothing. Every item is
returned **divided by its own maximum** (`peak_normalize`): its largest tap is exactly 1, the values lie
in [0, 1] like an image, and σ = 25/255 is 10 % of the peak. A solver that denoises a kernel estimate v
does the same: D(v / m, σ) · m with m = max(v), then projects back to the simplex (sum one).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import Dataset

from invlab.errors import ConfigError
from invlab.ops.kernels import motion_kernel
from invlab.utils.config import whole_number


def peak_normalize(kernel: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """(kernel / m, m) with m the per-sample maximum over the last two dims, shape (..., 1, 1)."""
    m = kernel.amax(dim=(-2, -1), keepdim=True).clamp_min(eps)
    return kernel / m, m


def anisotropic_gaussian(size: int, std_x: float, std_y: float, angle: float) -> Tensor:
    """A Gaussian with axis stds (std_x, std_y) rotated by `angle` (radians), centred at (size//2, size//2),
    sampled at pixel centres, truncated to size × size and normalised to sum one (float32)."""
    if size < 1 or std_x <= 0 or std_y <= 0:
        raise ValueError(f"anisotropic_gaussian needs size >= 1 and stds > 0, got {size}, {std_x}, {std_y}")
    t = torch.arange(size, dtype=torch.float64) - size // 2
    r, c = torch.meshgrid(t, t, indexing="ij")
    cos, sin = math.cos(angle), math.sin(angle)
    u, v = cos * c + sin * r, -sin * c + cos * r
    k = torch.exp(-0.5 * ((u / std_x) ** 2 + (v / std_y) ** 2))
    return (k / k.sum()).float()


def random_kernel(size: int, generator: torch.Generator, gaussian_fraction: float = 0.5,
                  std_range: tuple[float, float] = (0.5, 4.0), intensity_range: tuple[float, float] = (0.0, 1.0)
                  ) -> Tensor:
    """One kernel (size × size, sum one): a random anisotropic Gaussian with probability `gaussian_fraction`
    (one in four of them isotropic, so the common deblurring kernels are well represented), else a motion
    kernel with intensity ~ U[intensity_range]."""
    u = lambda lo, hi: lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))  # noqa: E731
    if u(0, 1) < gaussian_fraction:
        std_x = u(*std_range)
        std_y = std_x if u(0, 1) < 0.25 else u(*std_range)
        return anisotropic_gaussian(size, std_x, std_y, u(0, math.pi))
    return motion_kernel(size, u(*intensity_range), generator=generator)


class KernelSet(Dataset):
    """`length` random kernels; item i is drawn from a generator seeded by (seed, epoch, i), so the set is
    reproducible, fixed for a held-out set (epoch stays 0), and fresh every epoch for training once the
    trainer calls `set_epoch`. Items: {"x": (1, size, size) peak-normalised kernel, "index": i}."""

    def __init__(self, size: int = 25, length: int = 6400, seed: int = 0, gaussian_fraction: float = 0.5,
                 std_range: tuple[float, float] = (0.5, 4.0), intensity_range: tuple[float, float] = (0.0, 1.0),
                 limit: int | None = None):
        size = whole_number(size, "data.size", minimum=3)  # the kernel size
        length, seed = whole_number(length, "data.length", minimum=1), whole_number(seed, "data.seed", minimum=0)
        limit = whole_number(limit, "data.limit", minimum=1, allow_none=True)
        if not 0.0 <= gaussian_fraction <= 1.0:
            raise ConfigError(f"data.gaussian_fraction must lie in [0, 1], got {gaussian_fraction}.")
        if not 0 < std_range[0] <= std_range[1]:
            raise ConfigError(f"data.std_range must be 0 < lo <= hi, got {list(std_range)}.")
        if not 0.0 <= intensity_range[0] <= intensity_range[1] <= 1.0:
            raise ConfigError(f"data.intensity_range must satisfy 0 <= lo <= hi <= 1, got {list(intensity_range)}.")
        self.size, self.seed, self.gaussian_fraction = int(size), int(seed), float(gaussian_fraction)
        self.std_range = (float(std_range[0]), float(std_range[1]))
        self.intensity_range = (float(intensity_range[0]), float(intensity_range[1]))
        self.length = int(length) if limit is None else min(int(length), int(limit))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def kernel(self, i: int) -> Tensor:
        """Item i as a (size, size) kernel that sums to one (not peak-normalised)."""
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch * 7_919_113 + int(i)) & 0x7FFF_FFFF)
        return random_kernel(self.size, g, self.gaussian_fraction, self.std_range, self.intensity_range)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(i)
        x, _ = peak_normalize(self.kernel(i))
        return {"x": x.unsqueeze(0), "index": int(i)}
