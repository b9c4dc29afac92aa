"""Parallel-beam Radon transform in torch (differentiable), matching `skimage.transform.radon(circle=True)`.

Conventions (those of scikit-image, so results can be compared directly): a square N×N image, rotation
centre at pixel (N // 2, N // 2), angles θ in degrees (default: n_angles equally spaced in [0°, 180°)),
unit pixel spacing. The projection at angle θ and detector bin t (0..N−1) sums, over ray samples
s = 0..N−1 at unit spacing, the bilinearly interpolated image at

    column = c + cos θ (t − c) + sin θ (s − c),    row = c − sin θ (t − c) + cos θ (s − c),

with zeros outside the image, exactly what skimage does by warping the image and summing its rows.
The sinogram is laid out (B, C, n_angles, N) (skimage returns its transpose, (N, n_angles)).

The adjoint (back-projection) is the exact transpose: it is the autograd vector–Jacobian product of
the bilinear sampling (`grid_sample`'s backward scatters with the same weights), so ⟨Ax, y⟩ = ⟨x, Aᵀy⟩
to rounding. Prox and pseudo-inverse use the CG fallbacks; `baseline` is filtered back-projection.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from invlab.errors import ShapeError
from invlab.ops.base import register
from invlab.ops.common import ImageLinearOperator

_POINTS_PER_CHUNK = 1 << 22   # bounds the sampling-grid memory (~32 MB in float32) per chunk of angles


def ramp_filter(size: int, dtype=torch.float64) -> Tensor:
    """Fourier response of the ramp filter for a zero-padded projection of length `size`.

    Built from the band-limited spatial ramp (Kak & Slaney eq. 61) rather than |ω| sampled directly,
    which avoids the DC offset of the naive filter (the construction skimage's iradon uses too).
    """
    n = torch.cat([torch.arange(1, size // 2 + 1, 2), torch.arange(size // 2 - 1, 0, -2)]).to(dtype)
    h = torch.zeros(size, dtype=dtype)
    h[0] = 0.25
    h[1::2] = -1.0 / (math.pi * n) ** 2
    return 2 * torch.fft.fft(h).real


@register("radon")
class Radon(ImageLinearOperator):
    """Parallel-beam projections of (B, C, N, N) images at `angles` (degrees, a buffer of shape (1, n))."""

    def __init__(self, in_shape: tuple[int, ...], angles: Tensor):
        super().__init__(in_shape)
        c, h, w = self.in_shape
        if h != w:
            raise ShapeError(f"the Radon operator needs square images, got {h}×{w}.")
        angles = torch.as_tensor(angles, dtype=torch.float64).reshape(1, -1)
        self.register_buffer("angles", angles)
        self.out_shape = (c, angles.shape[1], h)
        # sampling grids are the costly part of a projection (~0.2 s at 256², 90 angles): cache them per
        # (dtype, device); angles are fixed at construction, so the cache never goes stale
        self._grids: dict[tuple, list[Tensor]] = {}

    @classmethod
    def parallel_beam(cls, in_shape, generator=None, n_angles: int = 90,
                      max_angle: float = 180.0) -> "Radon":
        """n_angles equally spaced angles in [0, max_angle) degrees (skimage's default layout)."""
        return cls(in_shape, torch.arange(n_angles, dtype=torch.float64) * (max_angle / n_angles))

    @classmethod
    def example(cls, in_shape=(1, 16, 16), generator=None) -> "Radon":
        return cls.parallel_beam(in_shape, n_angles=12)

    def _grid(self, angles_deg: Tensor, dtype, device) -> Tensor:
        """Normalised grid_sample coordinates, shape (1, n·N, N, 2): rows = (angle, ray sample s),
        columns = detector bin t."""
        n = self.in_shape[-1]
        c = n // 2
        theta = torch.deg2rad(angles_deg.to(torch.float64))
        cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
        t = torch.arange(n, dtype=torch.float64)[None, None, :] - c   # detector bin
        s = torch.arange(n, dtype=torch.float64)[None, :, None] - c   # position along the ray
        col = c + cos * t + sin * s
        row = c - sin * t + cos * s
        # align_corners=True: pixel index i ↦ −1 + 2i/(N−1), so pixel centres are sampled exactly
        grid = torch.stack([col, row], dim=-1) * (2.0 / (n - 1)) - 1.0
        return grid.reshape(1, -1, n, 2).to(dtype=dtype, device=device)

    def _grids_for(self, dtype, device) -> list[Tensor]:
        key = (dtype, str(device))
        if key not in self._grids:
            angles, n = self.angles[0], self.in_shape[-1]
            chunk = max(1, _POINTS_PER_CHUNK // (n * n))
            self._grids[key] = [self._grid(angles[i:i + chunk], dtype, device)
                                for i in range(0, angles.numel(), chunk)]
        return self._grids[key]

    def forward(self, x: Tensor) -> Tensor:
        b, c, n, _ = x.shape
        flat = x.reshape(1, b * c, n, n)            # one shared grid for every image and channel
        parts = []
        for grid in self._grids_for(x.dtype, x.device):
            samples = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            parts.append(samples.reshape(b, c, -1, n, n).sum(dim=3))   # sum along each ray
        return torch.cat(parts, dim=2)

    def fbp(self, y: Tensor) -> Tensor:
        """Filtered back-projection: ramp-filter each projection, back-project, scale by π/(2·n_angles)."""
        self.check_measurement(y)
        n = self.in_shape[-1]
        size = max(64, 1 << math.ceil(math.log2(2 * n)))   # zero-pad against circular wrap-around
        response = ramp_filter(size).to(dtype=y.dtype, device=y.device)
        spectrum = torch.fft.fft(F.pad(y, (0, size - n)), dim=-1) * response
        filtered = torch.fft.ifft(spectrum, dim=-1).real[..., :n]
        return self.adjoint(filtered) * (math.pi / (2 * self.angles.shape[1]))

    def baseline(self, y: Tensor) -> Tensor:
        return self.fbp(y)
