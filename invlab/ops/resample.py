"""Super-resolution: the "classical degradation" y = (k ⊛ x)[::s, ::s] with circular convolution.

The prox has a closed form (Zhao et al., "Fast single image super-resolution using a new analytical
solution for ℓ2–ℓ2 problems", IEEE TIP 2016). With A = S H (H circular blur, S s-fold decimation),
Woodbury gives (AᵀA + ρI)⁻¹ = (I − Hᵀ Sᵀ (S H Hᵀ Sᵀ + ρI)⁻¹ S H) / ρ, and S H Hᵀ Sᵀ is a circular
convolution on the low-resolution grid whose transfer function is d = mean over the s×s aliased copies
of |K|² (decimating a signal averages the s×s tiles of its full-resolution spectrum; zero-upsampling
tiles the spectrum). So everything is one FFT pair and an elementwise division.
"""
from __future__ import annotations

import torch
from torch import Tensor

from invlab.errors import ShapeError
from invlab.ops.base import register
from invlab.ops.blur import embed_kernel
from invlab.ops.common import ImageLinearOperator, as_rho
from invlab.ops.kernels import gaussian_kernel


def tile_mean(spec: Tensor, s: int) -> Tensor:
    """Spectrum of the s-fold decimated signal: average of the s×s tiles of a full (H, W) spectrum."""
    h, w = spec.shape[-2:]
    return spec.reshape(*spec.shape[:-2], s, h // s, s, w // s).mean(dim=(-4, -2))


def tile(spec: Tensor, s: int) -> Tensor:
    """Spectrum of the zero-upsampled signal: the low-resolution spectrum repeated s×s times."""
    return spec.repeat(*([1] * (spec.dim() - 2)), s, s)


def bicubic_kernel(scale: int) -> Tensor:
    """(4s − 1)² antialiasing kernel of bicubic downsampling by s: cubic(t / s) / s at t = −2s+1 … 2s−1."""
    s = int(scale)
    t = (torch.arange(4 * s - 1, dtype=torch.float64) - (2 * s - 1)).abs() / s
    a = -0.5
    w = torch.where(t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1,
                    torch.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, torch.zeros_like(t)))
    k = w[:, None] * w[None, :]
    return (k / k.sum()).float()


@register("super_resolution")
class SuperResolution(ImageLinearOperator):
    """Blur with a (B or 1, C or 1, kh, kw) kernel, then keep every `scale`-th pixel (x[..., ::s, ::s])."""

    def __init__(self, in_shape: tuple[int, ...], kernel: Tensor, scale: int):
        super().__init__(in_shape)
        c, h, w = self.in_shape
        self.scale = int(scale)
        if h % self.scale or w % self.scale:
            raise ShapeError(f"super-resolution ×{self.scale} needs the image height and width to be "
                             f"multiples of {self.scale}, got {h}×{w}.")
        kernel = torch.as_tensor(kernel, dtype=torch.float32)
        while kernel.dim() < 4:
            kernel = kernel.unsqueeze(0)
        self.register_buffer("kernel", kernel)
        self.out_shape = (c, h // self.scale, w // self.scale)

    @classmethod
    def gaussian(cls, in_shape, generator=None, scale: int = 4, kernel_size: int = 17,
                 kernel_std: float = 2.0) -> "SuperResolution":
        return cls(in_shape, gaussian_kernel(kernel_size, kernel_std), scale)

    @classmethod
    def bicubic(cls, in_shape, generator=None, scale: int = 4) -> "SuperResolution":
        """Antialiased bicubic downsampling (the DPS/DiffPIR ×4 operators' kernel): Keys' cubic (a = −0.5)
        stretched by the scale, (4·scale − 1)² taps, separable, normalised. Samples sit on pixel centres
        (x[..., ::s, ::s]); resizers that sample between pixels differ by a (s − 1)/2-pixel shift only."""
        return cls(in_shape, bicubic_kernel(scale), scale)

    @classmethod
    def example(cls, in_shape=(1, 16, 16), generator=None) -> "SuperResolution":
        return cls.gaussian(in_shape, generator, scale=2, kernel_size=5, kernel_std=0.8)

    def otf(self, dtype: torch.dtype) -> Tensor:
        h, w = self.in_shape[-2:]
        return torch.fft.fft2(embed_kernel(self.kernel.to(dtype), h, w))

    def forward(self, x: Tensor) -> Tensor:
        s = self.scale
        blurred = torch.fft.ifft2(torch.fft.fft2(x) * self.otf(x.dtype)).real
        return blurred[..., ::s, ::s]

    def _upsample_adjoint(self, low_spec: Tensor, k: Tensor) -> Tensor:
        """Hᵀ Sᵀ applied to a signal given by its low-resolution spectrum."""
        return torch.fft.ifft2(k.conj() * tile(low_spec, self.scale)).real

    def adjoint(self, y: Tensor) -> Tensor:
        self.check_measurement(y)
        return self._upsample_adjoint(torch.fft.fft2(y), self.otf(y.dtype))

    def prox_l2(self, z: Tensor, y: Tensor, rho: float | Tensor, iters: int = 100,
                lr: float | None = None) -> Tensor:
        self.check_input(z)
        self.check_measurement(y)
        s, k, rho = self.scale, self.otf(z.dtype), as_rho(rho, z)
        r = self._upsample_adjoint(torch.fft.fft2(y), k) + rho * z          # Aᵀy + ρz
        low = tile_mean(k * torch.fft.fft2(r), s)                            # spectrum of S H r
        d = tile_mean(k.abs() ** 2, s)                                       # S H Hᵀ Sᵀ transfer
        return (r - self._upsample_adjoint(low / (d + rho), k)) / rho

    def pinv(self, y: Tensor, iters: int = 100, eps: float = 1e-4) -> Tensor:
        """Aᵀ(AAᵀ + eps·I)⁻¹ y: the (Tikhonov-regularised) minimum-norm solution, as the CG fallback."""
        self.check_measurement(y)
        return self._min_norm(y, eps, relative=False)

    def baseline(self, y: Tensor) -> Tensor:
        """A smooth upsampling: the min-norm solution regularised at 1% of ‖AAᵀ‖ to keep noise down."""
        self.check_measurement(y)
        return self._min_norm(y, 1e-2, relative=True)

    def _min_norm(self, y: Tensor, eps: float, relative: bool) -> Tensor:
        k = self.otf(y.dtype)
        d = tile_mean(k.abs() ** 2, self.scale)
        # ‖AAᵀ‖ is about 1/s² for a low-pass kernel, so an absolute eps means more at larger scales
        eps = eps * d.flatten(-2).amax(-1)[..., None, None] if relative else eps
        return self._upsample_adjoint(torch.fft.fft2(y) / (d + eps), k)
