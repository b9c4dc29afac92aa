"""Circular (periodic) convolution blur, with FFT closed forms.

A x = k ⊛ x with periodic boundaries, i.e. `scipy.ndimage.convolve(x, k, mode='wrap')` per channel
(kernel centre at (kh // 2, kw // 2)). Circular boundaries are what make the adjoint, the prox and the
Wiener pseudo-inverse exact FFT divisions (DiffPIR and the PnP literature use them for that reason).
"""
from __future__ import annotations

import weakref

import torch
from torch import Tensor

from invlab.ops.base import register
from invlab.ops.common import ImageLinearOperator, as_rho
from invlab.ops.kernels import gaussian_kernel, motion_kernel, uniform_kernel


def embed_kernel(kernel: Tensor, height: int, width: int) -> Tensor:
    """Place a (..., kh, kw) kernel on a periodic (..., height, width) grid with its centre at (0, 0).

    Kernels larger than the image wrap around (their taps add up), which is exactly what circular
    convolution with a large kernel means.
    """
    kh, kw = kernel.shape[-2:]
    rows = (torch.arange(kh, device=kernel.device) - kh // 2) % height
    cols = (torch.arange(kw, device=kernel.device) - kw // 2) % width
    index = (rows[:, None] * width + cols[None, :]).reshape(-1)
    out = kernel.new_zeros(*kernel.shape[:-2], height * width)
    out.index_add_(-1, index, kernel.reshape(*kernel.shape[:-2], kh * kw))
    return out.reshape(*kernel.shape[:-2], height, width)


@register("blur")
class Blur(ImageLinearOperator):
    """Circular convolution with a kernel buffer of shape (B or 1, C or 1, kh, kw).

    `pinv` is the Tikhonov/Wiener inverse k̄/(|k|² + eps) (the same solution the generic CG fallback
    converges to); `baseline` is the blurred measurement itself, the usual "input" of deblurring tables.
    """

    def __init__(self, in_shape: tuple[int, ...], kernel: Tensor):
        super().__init__(in_shape)
        kernel = torch.as_tensor(kernel, dtype=torch.float32)
        while kernel.dim() < 4:
            kernel = kernel.unsqueeze(0)
        if kernel.shape[1] not in (1, self.in_shape[0]):
            raise ValueError(f"blur kernel has {kernel.shape[1]} channels; images have {self.in_shape[0]}")
        self.register_buffer("kernel", kernel)
        self.out_shape = self.in_shape

    # ---- factories (hydra `_partial_: true` targets) --------------------------------------------
    @classmethod
    def gaussian(cls, in_shape, generator=None, kernel_size: int = 25, kernel_std: float = 2.0) -> "Blur":
        return cls(in_shape, gaussian_kernel(kernel_size, kernel_std))

    @classmethod
    def gaussian_random_std(cls, in_shape, generator=None, kernel_size: int = 61, std_min: float = 3.0,
                            std_max: float = 9.0) -> "Blur":
        """A Gaussian kernel whose std is drawn uniformly from [std_min, std_max] (DiffPIR's deblurring test:
        std = 3(1 + 2U), i.e. U[3, 9], per image; use with `per_sample: true`)."""
        u = float(torch.rand(1, generator=generator, dtype=torch.float64))
        return cls(in_shape, gaussian_kernel(kernel_size, std_min + (std_max - std_min) * u))

    @classmethod
    def uniform(cls, in_shape, generator=None, kernel_size: int = 9) -> "Blur":
        return cls(in_shape, uniform_kernel(kernel_size))

    @classmethod
    def motion(cls, in_shape, generator=None, kernel_size: int = 25, intensity: float = 0.5) -> "Blur":
        return cls(in_shape, motion_kernel(kernel_size, intensity, generator=generator))

    @classmethod
    def example(cls, in_shape=(1, 16, 16), generator=None) -> "Blur":
        return cls.motion(in_shape, generator, kernel_size=5, intensity=0.5)

    # ---- closed forms --------------------------------------------------------------------------
    def otf(self, dtype: torch.dtype) -> Tensor:
        """Real-FFT transfer function of the kernel, shape (B or 1, C or 1, H, W // 2 + 1).

        Cached per (dtype, device, kernel version): iterative solvers call the prox hundreds of times
        with the same kernel, and recomputing it would double the FFT work per iteration.
        """
        key = (dtype, self.kernel.device, self.kernel.data_ptr(), self.kernel._version)
        if getattr(self, "_otf_key", None) != key:
            h, w = self.in_shape[-2:]
            self._otf = torch.fft.rfft2(embed_kernel(self.kernel.to(dtype), h, w))
            self._otf_key = key
        return self._otf

    def _adjoint_spectrum(self, y: Tensor, k: Tensor) -> Tensor:
        """k̄·ŷ, cached for the measurement tensor `y` itself (weak reference + in-place version), so a
        solver's repeated proxes on one measurement do one FFT of y, and no other tensor can hit it."""
        ref = getattr(self, "_y_ref", None)
        if ref is None or ref() is not y or self._y_version != y._version or self._y_k is not k:
            self._y_spec = k.conj() * torch.fft.rfft2(y)
            self._y_ref, self._y_version, self._y_k = weakref.ref(y), y._version, k
        return self._y_spec

    def _filter(self, x: Tensor, transfer: Tensor) -> Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(x) * transfer, s=x.shape[-2:])

    def forward(self, x: Tensor) -> Tensor:
        return self._filter(x, self.otf(x.dtype))

    def adjoint(self, y: Tensor) -> Tensor:
        self.check_measurement(y)
        return self._filter(y, self.otf(y.dtype).conj())

    def prox_l2(self, z: Tensor, y: Tensor, rho: float | Tensor, iters: int = 100,
                lr: float | None = None) -> Tensor:
        """(k̄ ŷ + ρ ẑ) / (|k|² + ρ) in the Fourier domain: exact, one FFT pair."""
        self.check_input(z)
        self.check_measurement(y)
        k = self.otf(z.dtype)
        rho = as_rho(rho, z)
        num = self._adjoint_spectrum(y, k) + rho * torch.fft.rfft2(z)
        return torch.fft.irfft2(num / (k.abs() ** 2 + rho), s=z.shape[-2:])

    def pinv(self, y: Tensor, iters: int = 100, eps: float = 1e-4) -> Tensor:
        self.check_measurement(y)
        k = self.otf(y.dtype)
        return self._filter(y, k.conj() / (k.abs() ** 2 + eps))

    def baseline(self, y: Tensor) -> Tensor:
        self.check_measurement(y)
        return y.clone()
