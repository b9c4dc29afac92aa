"""Linear operators on short videos (B, C, T, H, W) (issue 15, FLAIR): ×s super-resolution by s×s box
averaging per frame, circular Gaussian blur per frame, and frame dropping (interpolation).

Layout: channels stay at dim 1 as for images, the frame axis T is dim 2 (Conv3d's layout), so "per channel"
means the same as for images and a frame is x[:, :, t]. Every operator acts on each frame alike.

Each has closed forms for Aᵀ, A⁺, the prox and `project(x, y, eps)`, the data-consistency step FLAIR's
sampler uses: x + Aᵀ(AAᵀ + eps·I)⁻¹(y − Ax), the Euclidean projection onto {x : Ax = y} at eps = 0. For
the box-average SR and the frame mask AAᵀ is a multiple of the identity (the rows are orthogonal), so the
projection is exact and cheap; for the blur AAᵀ is a circular convolution, inverted in Fourier space (its
small frequencies make eps > 0 necessary under noise).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from invlab.errors import ShapeError
from invlab.ops.base import register
from invlab.ops.blur import embed_kernel
from invlab.ops.common import ImageLinearOperator, as_rho
from invlab.ops.kernels import gaussian_kernel
from invlab.utils.video import fold_frames, unfold_frames


class VideoOperator(ImageLinearOperator):
    """Shared: in_shape (C, T, H, W); `project` (data consistency); per-frame work folds T into the batch
    (utils/video.py `fold_frames`)."""

    video = True           # test_ops builds (C, T, H, W) examples for these
    example_frames = 4

    def __init__(self, in_shape: tuple[int, ...]):
        super().__init__(in_shape)
        if len(self.in_shape) != 4:
            raise ShapeError(f"{type(self).__name__} acts on videos (C, T, H, W) but was built for "
                             f"{self.in_shape}.")

    def project(self, x: Tensor, y: Tensor, eps: float = 0.0) -> Tensor:
        """x + Aᵀ(AAᵀ + eps·I)⁻¹(y − Ax): the closest x' to x with Ax' = y (eps = 0)."""
        self.check_input(x)
        self.check_measurement(y)
        return x + self._min_norm(y - self(x), eps)

    def pinv(self, y: Tensor, iters: int | None = None, eps: float = 1e-4) -> Tensor:
        self.check_measurement(y)
        return self._min_norm(y, eps)

    def _min_norm(self, r: Tensor, eps: float) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@register("video_super_resolution")
class VideoSuperResolution(VideoOperator):
    """y = mean over each s×s block of every frame (box-average downsampling): AAᵀ = I/s² exactly."""

    def __init__(self, in_shape: tuple[int, ...], scale: int = 4, generator=None):
        super().__init__(in_shape)
        c, t, h, w = self.in_shape
        self.scale = int(scale)
        if h % self.scale or w % self.scale:
            raise ShapeError(f"video super-resolution ×{self.scale} needs frame height and width to be multiples "
                             f"of {self.scale}, got {h}×{w}.")
        self.out_shape = (c, t, h // self.scale, w // self.scale)

    @classmethod
    def example(cls, in_shape=(1, 4, 16, 16), generator=None) -> "VideoSuperResolution":
        return cls(in_shape, scale=2)

    def forward(self, x: Tensor) -> Tensor:
        s = self.scale
        return x.reshape(*x.shape[:3], x.shape[3] // s, s, x.shape[4] // s, s).mean(dim=(-3, -1))

    def adjoint(self, y: Tensor) -> Tensor:
        self.check_measurement(y)
        s = self.scale
        return y.repeat_interleave(s, -2).repeat_interleave(s, -1) / s**2

    def prox_l2(self, z: Tensor, y: Tensor, rho, iters=None, lr=None) -> Tensor:
        self.check_input(z)
        self.check_measurement(y)
        rho = as_rho(rho, z)
        r = self.adjoint(y) + rho * z            # Woodbury with AAᵀ = I/s²
        return (r - self.adjoint(self(r)) / (rho + 1.0 / self.scale**2)) / rho

    def _min_norm(self, r: Tensor, eps: float) -> Tensor:
        s = self.scale
        return r.repeat_interleave(s, -2).repeat_interleave(s, -1) / (1.0 + eps * s**2)

    def baseline(self, y: Tensor) -> Tensor:
        """Bicubic upsampling of every frame (the table's "bicubic per frame")."""
        self.check_measurement(y)
        low, bct = fold_frames(y)
        up = F.interpolate(low, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return unfold_frames(up, bct)


@register("video_blur")
class VideoBlur(VideoOperator):
    """Circular convolution of every frame with one (kh, kw) kernel (FFT)."""

    def __init__(self, in_shape: tuple[int, ...], kernel: Tensor):
        super().__init__(in_shape)
        kernel = torch.as_tensor(kernel, dtype=torch.float32)
        self.register_buffer("kernel", kernel.reshape(1, 1, *kernel.shape[-2:]))
        self.out_shape = self.in_shape

    @classmethod
    def gaussian(cls, in_shape, generator=None, kernel_size: int = 9, kernel_std: float = 1.5) -> "VideoBlur":
        return cls(in_shape, gaussian_kernel(kernel_size, kernel_std))

    @classmethod
    def example(cls, in_shape=(1, 4, 16, 16), generator=None) -> "VideoBlur":
        return cls.gaussian(in_shape, kernel_size=5, kernel_std=1.0)

    def otf(self, dtype: torch.dtype) -> Tensor:
        h, w = self.in_shape[-2:]
        return torch.fft.fft2(embed_kernel(self.kernel.to(dtype), h, w))[:, :, None]  # (1, 1, 1, H, W)

    def forward(self, x: Tensor) -> Tensor:
        return torch.fft.ifft2(torch.fft.fft2(x) * self.otf(x.dtype)).real

    def adjoint(self, y: Tensor) -> Tensor:
        self.check_measurement(y)
        return torch.fft.ifft2(torch.fft.fft2(y) * self.otf(y.dtype).conj()).real

    def prox_l2(self, z: Tensor, y: Tensor, rho, iters=None, lr=None) -> Tensor:
        self.check_input(z)
        self.check_measurement(y)
        k, rho = self.otf(z.dtype), as_rho(rho, z)
        num = k.conj() * torch.fft.fft2(y) + rho * torch.fft.fft2(z)
        return torch.fft.ifft2(num / (k.abs() ** 2 + rho)).real

    def _min_norm(self, r: Tensor, eps: float) -> Tensor:
        k = self.otf(r.dtype)
        return torch.fft.ifft2(k.conj() * torch.fft.fft2(r) / (k.abs() ** 2 + eps)).real

    def baseline(self, y: Tensor) -> Tensor:
        """Wiener-type deconvolution of every frame, k̄ŷ/(|k|² + 0.01·max|k|²) (the table's per-frame baseline and
        the conditional DPM's condition; it keeps 99 % of the mean brightness)."""
        self.check_measurement(y)
        return self._min_norm(y, 1e-2 * float(self.otf(y.dtype).abs().max()) ** 2)


@register("video_frame_mask")
class VideoFrameMask(VideoOperator):
    """Keeps the frames `keep` (default every other one, 0, 2, 4, ...): y = x[:, :, keep], AAᵀ = I."""

    def __init__(self, in_shape: tuple[int, ...], step: int = 2, generator=None):
        super().__init__(in_shape)
        c, t, h, w = self.in_shape
        self.step = int(step)
        if self.step < 1 or t < 2:
            raise ShapeError(f"frame dropping needs step >= 1 and at least 2 frames, got step {step}, {t} frames.")
        self.keep = list(range(0, t, self.step))   # a plain list: a buffer would read as a per-sample parameter
        self.out_shape = (c, len(self.keep), h, w)

    @classmethod
    def example(cls, in_shape=(1, 4, 16, 16), generator=None) -> "VideoFrameMask":
        return cls(in_shape)

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, self.keep]

    def adjoint(self, y: Tensor) -> Tensor:
        self.check_measurement(y)
        out = y.new_zeros(y.shape[0], *self.in_shape)
        out[:, :, self.keep] = y
        return out

    def prox_l2(self, z: Tensor, y: Tensor, rho, iters=None, lr=None) -> Tensor:
        self.check_input(z)
        self.check_measurement(y)
        rho = as_rho(rho, z)
        out = z.clone()
        out[:, :, self.keep] = (y + rho * z[:, :, self.keep]) / (1 + rho)
        return out

    def _min_norm(self, r: Tensor, eps: float) -> Tensor:
        return self.adjoint(r) / (1.0 + eps)

    def observed(self) -> Tensor:
        """(T,) 1 for the kept frames, 0 for the dropped ones."""
        m = torch.zeros(self.in_shape[1])
        m[self.keep] = 1.0
        return m

    def baseline(self, y: Tensor) -> Tensor:
        """Linear blending of the nearest kept frames before and after each dropped one (the last ones: a copy)."""
        self.check_measurement(y)
        keep = self.keep
        frames = []
        for t in range(self.in_shape[1]):
            before = max(k for k in keep if k <= t)
            after = [k for k in keep if k >= t]
            if not after or after[0] == before:
                frames.append(y[:, :, keep.index(before)])
                continue
            w = (t - before) / (after[0] - before)
            frames.append((1 - w) * y[:, :, keep.index(before)] + w * y[:, :, keep.index(after[0])])
        return torch.stack(frames, 2)
