"""Cartesian MRI: y = M F x (single coil) and y_c = M F (S_c x) (multi-coil), F the centred unitary FFT.

Images are real (the project's convention), so the adjoint is Re(Aᴴ y): the transpose for the real
inner product Re⟨·,·⟩ on measurements. Measurements are complex, zero where k-space is not sampled.
For real x, Re(Fᴴ M F x) = Fᴴ ½(M(k) + M(−k)) F x, so the single-coil normal operator is diagonal in
k-space with the symmetrised mask; that gives its exact prox and pseudo-inverse. Multi-coil has no
such diagonal form and uses the CG fallbacks.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from invlab.ops.base import register
from invlab.ops.common import ImageLinearOperator, as_rho, fft2c, ifft2c, real_view_to_complex
from invlab.ops.mask import cartesian_column_mask


def reflect_frequencies(m: Tensor) -> Tensor:
    """m(−k) for a centred spectrum m over the last two axes (size-1 broadcast axes are left alone)."""
    for dim in (-2, -1):
        if m.shape[dim] > 1:
            m = torch.fft.ifftshift(m, dim=dim)
            m = torch.roll(torch.flip(m, dims=(dim,)), 1, dims=dim)
            m = torch.fft.fftshift(m, dim=dim)
    return m


def simulated_coil_maps(n_coils: int, height: int, width: int,
                        generator: torch.Generator | None = None) -> Tensor:
    """Smooth complex coil sensitivities (n_coils, H, W), normalised so Σ_c |S_c|² = 1 at every pixel.

    Coil c sits on a ring around the field of view (angle 2πc/n plus jitter): its magnitude decays as a
    broad Gaussian of the distance to the coil and its phase varies linearly across the image, a crude
    but smooth stand-in for Biot–Savart fields.
    """
    rand = lambda *s: torch.rand(*s, generator=generator, dtype=torch.float64)  # noqa: E731
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, height, dtype=torch.float64),
                            torch.linspace(-1, 1, width, dtype=torch.float64), indexing="ij")
    angles = 2 * math.pi * (torch.arange(n_coils, dtype=torch.float64) + 0.3 * (rand(n_coils) - 0.5)) / n_coils
    radius = 1.2 + 0.2 * rand(n_coils)
    cy, cx = radius * torch.sin(angles), radius * torch.cos(angles)
    dist2 = (yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2
    magnitude = torch.exp(-dist2 / (2 * 1.0**2))
    slope = math.pi * (rand(n_coils, 2) - 0.5)
    phase = 2 * math.pi * rand(n_coils)[:, None, None] + slope[:, 0, None, None] * yy + slope[:, 1, None, None] * xx
    maps = magnitude * torch.exp(1j * phase)
    maps = maps / maps.abs().pow(2).sum(0, keepdim=True).sqrt()
    return maps.to(torch.complex64)


@register("mri")
class SingleCoilMRI(ImageLinearOperator):
    """y = M ⊙ fft2c(x); mask buffer (B or 1, 1, H or 1, W) of 0/1; measurements complex (B, C, H, W)."""

    def __init__(self, in_shape: tuple[int, ...], mask: Tensor):
        super().__init__(in_shape)
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.dim() == 1:            # a column mask (W,)
            mask = mask[None, :]
        while mask.dim() < 4:
            mask = mask.unsqueeze(0)
        self.register_buffer("mask", mask)
        self.out_shape = self.in_shape

    @classmethod
    def cartesian(cls, in_shape, generator=None, acceleration: float = 4.0,
                  center_fraction: float = 0.08) -> "SingleCoilMRI":
        return cls(in_shape, cartesian_column_mask(in_shape[-1], acceleration, center_fraction, generator))

    @classmethod
    def example(cls, in_shape=(1, 16, 16), generator=None) -> "SingleCoilMRI":
        return cls.cartesian(in_shape, generator, acceleration=3.0, center_fraction=0.2)

    def _mask(self, dtype) -> Tensor:
        return self.mask.to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self._mask(x.dtype) * fft2c(x)

    def adjoint(self, y: Tensor) -> Tensor:
        self.check_measurement(y)
        return ifft2c(self._mask(y.real.dtype) * y).real

    def _normal_inverse(self, rhs: Tensor, shift: float | Tensor) -> Tensor:
        """(AᵀA + shift·I)⁻¹ rhs for real images rhs, via the symmetrised mask."""
        m = self._mask(rhs.dtype)
        m_sym = 0.5 * (m + reflect_frequencies(m))
        return ifft2c(fft2c(rhs) / (m_sym + shift)).real

    def prox_l2(self, z, y, rho, iters=100, lr=None) -> Tensor:
        self.check_input(z)
        self.check_measurement(y)
        rho = as_rho(rho, z)
        return self._normal_inverse(self.adjoint(y) + rho * z, rho)

    def pinv(self, y: Tensor, iters: int = 100, eps: float = 1e-4) -> Tensor:
        return self._normal_inverse(self.adjoint(y), eps)

    def baseline(self, y: Tensor) -> Tensor:
        """The zero-filled reconstruction Re(Fᴴ y), the standard MRI "input"."""
        return self.adjoint(y)


@register("mri_multicoil")
class MultiCoilMRI(ImageLinearOperator):
    """y_c = M ⊙ fft2c(S_c x); measurements complex (B, C, n_coils, H, W).

    Coil maps are a (B or 1, 1, n_coils, H, W, 2) real-view buffer; mask as in SingleCoilMRI.
    """

    def __init__(self, in_shape: tuple[int, ...], mask: Tensor, coil_maps: Tensor):
        super().__init__(in_shape)
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.dim() == 1:
            mask = mask[None, :]
        while mask.dim() < 4:
            mask = mask.unsqueeze(0)
        coil_maps = torch.as_tensor(coil_maps)
        while coil_maps.dim() < 5:
            coil_maps = coil_maps.unsqueeze(0)
        self.register_buffer("mask", mask)
        self.register_buffer("coil_maps", torch.view_as_real(coil_maps.to(torch.complex64)).contiguous())
        self.n_coils = coil_maps.shape[2]
        self.out_shape = (self.in_shape[0], self.n_coils, *self.in_shape[1:])

    @classmethod
    def cartesian(cls, in_shape, generator=None, n_coils: int = 8, acceleration: float = 4.0,
                  center_fraction: float = 0.08) -> "MultiCoilMRI":
        mask = cartesian_column_mask(in_shape[-1], acceleration, center_fraction, generator)
        return cls(in_shape, mask, simulated_coil_maps(n_coils, *in_shape[-2:], generator=generator))

    @classmethod
    def example(cls, in_shape=(1, 16, 16), generator=None) -> "MultiCoilMRI":
        return cls.cartesian(in_shape, generator, n_coils=3, acceleration=3.0, center_fraction=0.2)

    def _maps(self, dtype) -> Tensor:
        return real_view_to_complex(self.coil_maps.to(dtype))

    def forward(self, x: Tensor) -> Tensor:
        return self.mask.to(x.dtype).unsqueeze(2) * fft2c(self._maps(x.dtype) * x.unsqueeze(2))

    def adjoint(self, y: Tensor) -> Tensor:
        self.check_measurement(y)
        dtype = y.real.dtype
        coil_images = ifft2c(self.mask.to(dtype).unsqueeze(2) * y)
        return (self._maps(dtype).conj() * coil_images).sum(2).real

    def baseline(self, y: Tensor) -> Tensor:
        """Zero-filled coil combination Re Σ_c S̄_c Fᴴ y_c (exact inverse when fully sampled)."""
        return self.adjoint(y)
