"""Building blocks shared by the denoising networks: noise-level maps, padding, and a spectral
normalisation that bounds the operator norm of a *convolution*.

`torch.nn.utils.parametrizations.spectral_norm` normalises the weight reshaped to (out, in·k·k). That
matrix norm is not the norm of the convolution operator: a 3×3 conv normalised that way can still
have operator norm ~1.5 (measured on a 64→64 layer). For a provably nonexpansive network we need
the true bound. A zero-padded convolution is a compression of a circular one, whose operator norm is
the largest singular value of the kernel's Fourier transform Ŵ(ω) (an out×in matrix at each
frequency ω). `ConvOperatorNorm` runs one power-iteration step per frequency on a fixed grid each
training forward (the vectors persist in a buffer, as in torch's spectral_norm) and divides the weight
by max(1, max_ω σ_max(Ŵ(ω))).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize


def noise_map(x: Tensor, sigma: Tensor | float | None) -> Tensor:
    """A (B, 1, H, W) map holding each sample's noise level (in [0, 1] image units)."""
    if sigma is None:
        raise ValueError("this network is conditioned on the noise level: call it as net(x, sigma).")
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    s = s.expand(x.shape[0]) if s.dim() == 0 else s.reshape(x.shape[0])
    return s.view(-1, 1, 1, 1).expand(-1, 1, x.shape[-2], x.shape[-1])


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Replicate-pad the bottom/right so H and W are multiples of `multiple`; returns the original H, W."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


class ConvOperatorNorm(nn.Module):
    """Parametrization W ↦ W / max(1, ‖conv_W‖₂), ‖conv_W‖₂ estimated over a grid of frequencies."""

    def __init__(self, weight: Tensor, grid: int = 32, n_power_iterations: int = 1, init_iterations: int = 50):
        super().__init__()
        out_c, in_c, kh, kw = weight.shape
        self.grid = max(grid, kh, kw)
        self.n_power_iterations = n_power_iterations
        g = torch.Generator().manual_seed(0)
        v = torch.randn(self.grid, self.grid // 2 + 1, in_c, 2, generator=g, dtype=torch.float32)
        self.register_buffer("_v", v.to(weight.device))  # complex vectors stored as (re, im) pairs
        self.power_iterate(weight.detach(), init_iterations)

    def _spectrum(self, w: Tensor) -> Tensor:
        # (out, in, k, k) -> (g, g//2+1, out, in): the kernel's transform at every grid frequency
        return torch.fft.rfft2(w.float(), s=(self.grid, self.grid)).permute(2, 3, 0, 1)

    @torch.no_grad()
    def power_iterate(self, w: Tensor, iterations: int) -> None:
        a = self._spectrum(w.detach())
        v = torch.view_as_complex(self._v.contiguous()).unsqueeze(-1)
        for _ in range(iterations):
            v = a.mH @ (a @ v)
            v = v / v.norm(dim=-2, keepdim=True).clamp_min(1e-12)
        self._v.copy_(torch.view_as_real(v.squeeze(-1)))

    def norm(self, w: Tensor) -> Tensor:
        v = torch.view_as_complex(self._v.contiguous()).unsqueeze(-1)
        return (self._spectrum(w) @ v).norm(dim=(-2, -1)).max()

    def forward(self, w: Tensor) -> Tensor:
        if self.training and torch.is_grad_enabled():
            self.power_iterate(w, self.n_power_iterations)
        return w / self.norm(w).clamp_min(1.0).to(w.dtype)


def conv(in_c: int, out_c: int, kernel: int = 3, stride: int = 1, bias: bool = True,
         spectral_norm: bool = False, transpose: bool = False) -> nn.Module:
    """A conv (or transposed conv) layer, optionally with its operator norm bounded by 1."""
    if transpose:
        layer = nn.ConvTranspose2d(in_c, out_c, kernel, stride=stride, bias=bias)
    else:
        layer = nn.Conv2d(in_c, out_c, kernel, stride=stride, padding=(kernel - 1) // 2 if stride == 1 else 0,
                          bias=bias)
    if spectral_norm:
        if transpose:  # a transposed conv's weight is (in, out, k, k): the same operator norm, transposed
            raise NotImplementedError("spectral_norm is implemented for plain convolutions only.")
        parametrize.register_parametrization(layer, "weight", ConvOperatorNorm(layer.weight))
    return layer


def refresh_spectral_norms(net: nn.Module, iterations: int = 100) -> None:
    """Run extra power iterations on every ConvOperatorNorm (e.g. before exporting trained weights)."""
    for module in net.modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                if isinstance(p, ConvOperatorNorm):
                    p.power_iterate(module.parametrizations.weight.original, iterations)
