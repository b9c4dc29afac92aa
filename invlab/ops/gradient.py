"""Circular finite differences D (the analysis operator of APnP, methods.md B) and its adjoint.

    D x = (∂_h x, ∂_v x),  ∂_h x[i, j] = x[i, j+1] − x[i, j],  ∂_v x[i, j] = x[i+1, j] − x[i, j]

with periodic wrap-around, per image channel: (B, C, H, W) → (B, 2C, H, W), channels ordered
(h, v) for image channel 0, then (h, v) for channel 1, ... Periodic (not Neumann) boundaries make D a pair
of circular convolutions, so DᵀD is diagonal in the Fourier basis with symbol |e^{iω_h} − 1|² +
|e^{iω_v} − 1|² = 4 sin²(πl/W) + 4 sin²(πk/H): with a circular blur the APnP x-update
(AᵀA + μDᵀD)x = r is one FFT division. (`invlab.priors.tv` uses Neumann differences, the discretisation
of Chambolle's TV denoiser; it has no such diagonalisation, hence this separate operator.)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from invlab.errors import ShapeError


def grad(x: Tensor) -> Tensor:
    """D x: (B, C, H, W) → (B, 2C, H, W), forward differences with periodic boundaries."""
    if x.dim() != 4:
        raise ShapeError(f"finite differences need a (B, C, H, W) batch, got shape {tuple(x.shape)}.")
    dh = torch.roll(x, shifts=-1, dims=-1) - x
    dv = torch.roll(x, shifts=-1, dims=-2) - x
    return torch.stack((dh, dv), dim=2).flatten(1, 2)


def grad_adjoint(z: Tensor) -> Tensor:
    """Dᵀ z: (B, 2C, H, W) → (B, C, H, W) (minus the backward-difference divergence)."""
    if z.dim() != 4 or z.shape[1] % 2:
        raise ShapeError(f"Dᵀ needs a (B, 2C, H, W) gradient field, got shape {tuple(z.shape)}.")
    z = z.unflatten(1, (z.shape[1] // 2, 2))
    dh, dv = z[:, :, 0], z[:, :, 1]
    return (torch.roll(dh, shifts=1, dims=-1) - dh) + (torch.roll(dv, shifts=1, dims=-2) - dv)


def gram(x: Tensor) -> Tensor:
    """DᵀD x (the periodic 5-point negative Laplacian)."""
    return grad_adjoint(grad(x))


def symbols(height: int, width: int, dtype: torch.dtype = torch.float32, device=None,
            onesided: bool = False) -> tuple[Tensor, Tensor]:
    """Fourier transfer functions (d_h, d_v) of ∂_h and ∂_v on an (H, W) grid, torch.fft.fft2 layout
    (rfft2 layout, W // 2 + 1 columns, when onesided): F(∂x) = d · F(x). Complex, shape (H, W')."""
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    cols = torch.arange(width // 2 + 1 if onesided else width, dtype=torch.float64, device=device)
    rows = torch.arange(height, dtype=torch.float64, device=device)
    dh = torch.exp(2j * math.pi * cols / width) - 1
    dv = torch.exp(2j * math.pi * rows / height) - 1
    dh = dh.to(cdtype)[None, :].expand(height, -1)
    dv = dv.to(cdtype)[:, None].expand(-1, cols.numel())
    return dh, dv


def gram_symbol(height: int, width: int, dtype: torch.dtype = torch.float32, device=None,
                onesided: bool = False) -> Tensor:
    """Real transfer function of DᵀD: |d_h|² + |d_v|² = 4 sin²(πl/W) + 4 sin²(πk/H), shape (H, W')."""
    cols = torch.arange(width // 2 + 1 if onesided else width, dtype=torch.float64, device=device)
    rows = torch.arange(height, dtype=torch.float64, device=device)
    out = 4 * torch.sin(math.pi * cols / width)[None, :] ** 2 + 4 * torch.sin(math.pi * rows / height)[:, None] ** 2
    return out.to(dtype)
