"""Shared pieces of the concrete operators: shape checks, ρ broadcasting, centred FFTs.

`ImageOperator` / `ImageLinearOperator` add to the base contract what every concrete operator here
needs: a known measurement shape (`out_shape`), a check that measurements and per-sample parameters fit
(one-sentence `ShapeError`s instead of broadcasting surprises), and shape-checked fallbacks.
"""
from __future__ import annotations

import torch
from torch import Tensor

from invlab.errors import ShapeError
from invlab.ops.base import LinearOperator, Operator


def as_rho(rho: float | Tensor, ref: Tensor) -> Tensor:
    """ρ as a real tensor shaped (B or 1, 1, ..., 1) so it broadcasts against the image batch `ref`."""
    dtype = ref.real.dtype if ref.is_complex() else ref.dtype
    return torch.as_tensor(rho, dtype=dtype, device=ref.device).reshape(-1, *([1] * (ref.dim() - 1)))


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2-D FFT over the last two axes (DC in the middle, Parseval holds)."""
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=dims), norm="ortho"), dim=dims)


def ifft2c(k: Tensor) -> Tensor:
    """Inverse of `fft2c` (and its adjoint, since it is unitary)."""
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=dims), norm="ortho"), dim=dims)


def real_view_to_complex(t: Tensor) -> Tensor:
    """Complex parameters are stored as real (..., 2) buffers so `.double()` converts them too."""
    return torch.view_as_complex(t.contiguous())


class _Checks:
    """Mixin: measurement-shape and parameter-batch checks shared by all concrete operators."""

    out_shape: tuple[int, ...] = ()

    def param_batch(self) -> int:
        """Batch size of the per-sample parameters (1 when every parameter is shared)."""
        sizes = [b.shape[0] for b in self.buffers() if b.dim() > 0]
        return max(sizes, default=1)

    def _check_batch(self, n: int, what: str) -> None:
        b = self.param_batch()
        if b > 1 and n != b:
            raise ShapeError(f"{type(self).__name__} was built with per-sample parameters for a batch "
                             f"of {b} but got {what} with batch size {n}.")

    def check_input(self, x: Tensor) -> None:
        super().check_input(x)
        self._check_batch(x.shape[0], "images")

    def check_measurement(self, y: Tensor) -> None:
        """Raise a one-sentence ShapeError when y does not have shape (B, *out_shape)."""
        if y.dim() != len(self.out_shape) + 1 or tuple(y.shape[1:]) != tuple(self.out_shape):
            raise ShapeError(
                f"{type(self).__name__} expects measurements of shape "
                f"(B, {', '.join(map(str, self.out_shape))}) but got {tuple(y.shape)}.")
        self._check_batch(y.shape[0], "measurements")


class ImageOperator(_Checks, Operator):
    """A (possibly nonlinear) operator with shape-checked fallbacks."""

    def data_fidelity(self, x: Tensor, y: Tensor) -> Tensor:
        self.check_measurement(y)
        return super().data_fidelity(x, y)

    def prox_l2(self, z: Tensor, y: Tensor, rho: float | Tensor, iters: int = 100,
                lr: float | None = None) -> Tensor:
        self.check_input(z)
        self.check_measurement(y)
        return super().prox_l2(z, y, rho, iters=iters, lr=lr)


class ImageLinearOperator(_Checks, LinearOperator):
    """A linear operator with shape-checked fallbacks (autograd adjoint, CG prox and pinv)."""

    def adjoint(self, y: Tensor) -> Tensor:
        self.check_measurement(y)
        return super().adjoint(y)

    def grad(self, x: Tensor, y: Tensor) -> Tensor:
        self.check_measurement(y)
        return super().grad(x, y)

    def prox_l2(self, z: Tensor, y: Tensor, rho: float | Tensor, iters: int | None = None,
                lr: float | None = None) -> Tensor:
        self.check_input(z)
        self.check_measurement(y)
        return super().prox_l2(z, y, rho, iters=iters, lr=lr)

    def pinv(self, y: Tensor, iters: int | None = None, eps: float = 1e-4) -> Tensor:
        self.check_measurement(y)
        return super().pinv(y, iters=iters, eps=eps)
