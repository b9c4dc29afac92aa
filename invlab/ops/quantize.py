"""1-bit dithered quantised sensing (DPnP): y = 2·1[u < sigmoid(x̃/τ)] − 1, u ~ U[0,1), τ = 0.4.

DPnP applies this to images x̃ in [-1, 1]; ours are in [0, 1], so the operator maps x̃ = 2x − 1 first
and the measurement distribution is the same as the paper's. The operator itself returns the logits
a = (2x − 1)/τ; the random quantiser is the task's noise model (`noise: dither`, see noise.py).

Because y ∈ {−1, +1} is not "A(x) plus Gaussian noise", the data term solvers minimise is the negative
log-likelihood, not ½‖A(x) − y‖²:

    data_fidelity(x, y) = Σ log(1 + exp(−y·a)),   grad = −(2/τ)·y·sigmoid(−y·a).

`prox_l2` is exact up to float precision: the objective separates over pixels into strictly convex
1-D problems, solved by bisection on the (monotone) derivative.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from invlab.ops.base import register
from invlab.ops.common import ImageOperator, as_rho


@register("quantized")
class OneBitQuantized(ImageOperator):
    """Logits a = (2x − 1)/τ; measurements y ∈ {−1, +1} of the image shape (drawn by `noise: dither`)."""

    measurement_noise = "dither"   # the Task refuses other noise models for this operator

    def __init__(self, in_shape: tuple[int, ...], generator: torch.Generator | None = None,
                 temperature: float = 0.4):
        super().__init__(in_shape)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.out_shape = self.in_shape

    @classmethod
    def example(cls, in_shape=(1, 16, 16), generator=None) -> "OneBitQuantized":
        return cls(in_shape)

    def forward(self, x: Tensor) -> Tensor:
        return (2 * x - 1) / self.temperature

    def data_fidelity(self, x: Tensor, y: Tensor) -> Tensor:
        """Negative log-likelihood Σ log(1 + exp(−y·a)) per batch element, shape (B,)."""
        self.check_measurement(y)
        return F.softplus(-y * self(x)).flatten(1).sum(1)

    def grad(self, x: Tensor, y: Tensor) -> Tensor:
        self.check_measurement(y)
        return -(2 / self.temperature) * y * torch.sigmoid(-y * self(x))

    def prox_l2(self, z: Tensor, y: Tensor, rho: float | Tensor, iters: int = 60,
                lr: float | None = None) -> Tensor:
        """argmin_x NLL(x) + ρ/2‖x − z‖², pixelwise bisection (`iters` halvings; `lr` is unused).

        The NLL derivative is bounded by 2/τ, so the root lies within z ± 2/(τρ)."""
        self.check_input(z)
        self.check_measurement(y)
        rho = as_rho(rho, z).expand_as(z)
        width = 2 / (self.temperature * rho)
        lo, hi = z - width, z + width
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            slope = self.grad(mid, y) + rho * (mid - z)
            lo = torch.where(slope < 0, mid, lo)
            hi = torch.where(slope < 0, hi, mid)
        return 0.5 * (lo + hi)

    def baseline(self, y: Tensor) -> Tensor:
        """0.5·y + 0.5, i.e. the bits as a {0, 1} image (an unbiased estimate of sigmoid(a))."""
        self.check_measurement(y)
        return 0.5 * y + 0.5
