"""A fixed, differentiable nonlinear blur: a circular blur followed by a quadratic sensor response.

The papers (DPS, DMPlug) use the learned bkse `KernelWizard` network, whose weights are not available
offline. We keep what makes that task different from deblurring — a nonlinear forward model that
solvers can only differentiate, not invert in closed form — with a model small enough to reason about:

    h = k ⊛ x            (circular blur with a motion or Gaussian kernel, like `Blur`)
    y = h + α·h²         (a sensor whose response rises faster than linearly, α = 0.5 by default)

For h in [0, 1] the response is monotone, so `baseline` can invert it exactly and returns the blurred
image h = (√(1 + 4αy) − 1)/(2α) (the nonlinear analogue of the blurred input of deblurring tables).
"""
from __future__ import annotations

import torch
from torch import Tensor

from invlab.ops.base import register
from invlab.ops.blur import Blur
from invlab.ops.common import ImageOperator
from invlab.ops.kernels import gaussian_kernel, motion_kernel


@register("nonlinear_blur")
class NonlinearBlur(ImageOperator):
    """y = h + α h² with h = k ⊛ x; measurements real, image-shaped. Nonlinear: autograd fallbacks."""

    def __init__(self, in_shape: tuple[int, ...], kernel: Tensor, response: float = 0.5):
        super().__init__(in_shape)
        if response <= 0:
            raise ValueError(f"response α must be positive (α = 0 is the linear Blur), got {response}")
        self.blur = Blur(self.in_shape, kernel)
        self.response = float(response)
        self.out_shape = self.in_shape

    @classmethod
    def motion(cls, in_shape, generator=None, kernel_size: int = 25, intensity: float = 0.5,
               response: float = 0.5) -> "NonlinearBlur":
        return cls(in_shape, motion_kernel(kernel_size, intensity, generator=generator), response)

    @classmethod
    def gaussian(cls, in_shape, generator=None, kernel_size: int = 25, kernel_std: float = 2.0,
                 response: float = 0.5) -> "NonlinearBlur":
        return cls(in_shape, gaussian_kernel(kernel_size, kernel_std), response)

    @classmethod
    def example(cls, in_shape=(1, 16, 16), generator=None) -> "NonlinearBlur":
        return cls.motion(in_shape, generator, kernel_size=5)

    def forward(self, x: Tensor) -> Tensor:
        h = self.blur(x)
        return h + self.response * h * h

    def baseline(self, y: Tensor) -> Tensor:
        self.check_measurement(y)
        a = self.response
        return (torch.sqrt((1 + 4 * a * y).clamp_min(0)) - 1) / (2 * a)
