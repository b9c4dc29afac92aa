"""Small pieces every iterative PnP solver shares: initialisation, noise levels, step sizes, residuals.

Everything here works on whole batches with per-sample (B,) tensors and never synchronises with the
device, so a solver's per-iteration overhead stays a few elementwise kernels beside the denoiser call.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from invlab.errors import ConfigError

# DPIR's floor on noise levels (0.255/255 = a tenth of a grey level): a noiseless task still gets a
# positive denoiser input and a finite data weight.
SIGMA_FLOOR = 0.255 / 255.0


def per_sample(value: float | Tensor, like: Tensor) -> Tensor:
    """A scalar or (B,) value as a (B,) tensor on like's device and dtype.

    A Python scalar becomes a fill on the device rather than a host-to-device copy, so calling this
    inside an iteration does not stall a GPU queue.
    """
    dtype = like.real.dtype if like.is_complex() else like.dtype
    if not isinstance(value, Tensor):
        return torch.full((like.shape[0],), float(value), dtype=dtype, device=like.device)
    t = value.to(dtype=dtype, device=like.device)
    return t.expand(like.shape[0]).clone() if t.dim() == 0 else t.reshape(like.shape[0])


def expand(v: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, ...) so a per-sample value broadcasts against like."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def sigma_y_per_sample(A, like: Tensor) -> Tensor:
    """Measurement noise level per sample, shape (B,).

    A noise model may carry a (B,) tensor of levels (a batch drawn at several noise levels); `A.sigma_y`
    is a float and cannot express that, so the tensor is read directly when present.
    """
    sigma = getattr(getattr(A, "noise", None), "sigma", None)
    if isinstance(sigma, Tensor) and sigma.numel() > 1:
        return per_sample(sigma.detach(), like)
    return per_sample(A.sigma_y, like)


def denoiser_sigma(sigma_den: float, sigma_den_factor: float | None, A, like: Tensor) -> Tensor:
    """The denoiser's σ per sample: `sigma_den`, or `sigma_den_factor`·σ_y when a factor is set."""
    if sigma_den_factor is None:
        return per_sample(sigma_den, like)
    return (sigma_den_factor * sigma_y_per_sample(A, like)).clamp_min(SIGMA_FLOOR)


def initial_iterate(y: Tensor, A, x_init: Tensor | None) -> Tensor:
    """x_init when given, else the operator's baseline reconstruction (A⁺y for linear operators).

    Nonlinear operators without a baseline start from mid-grey: a neutral point of the [0,1] range.
    """
    if x_init is not None:
        return x_init.detach().clone()
    try:
        return A.baseline(y).detach()
    except NotImplementedError:
        return torch.full((y.shape[0], *A.in_shape), 0.5, dtype=_real(y).dtype, device=y.device)


def relative_change(x: Tensor, x_prev: Tensor) -> Tensor:
    """‖x − x_prev‖ / ‖x‖ per sample, shape (B,)."""
    return (x - x_prev).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-12)


@torch.no_grad()
def normal_op_norm(A, like: Tensor, iters: int = 30) -> Tensor:
    """Estimate ‖AᵀA‖₂ (the Lipschitz constant of ∇½‖Ax−y‖²) per sample by power iteration.

    One start vector is shared by the whole batch and drawn from a fixed seed, so a sample's step size
    does not depend on its batch neighbours or on the caller's random stream. The estimate approaches
    the top eigenvalue from below; callers keep a safety margin in their step.
    """
    if not A.is_linear:
        raise ConfigError(f"the step size defaults to 1/‖AᵀA‖, which needs a linear operator, but "
                          f"{type(A).__name__} is nonlinear; set the solver's gamma explicitly.")
    gen = torch.Generator(device=like.device).manual_seed(0)
    v = torch.randn((1, *like.shape[1:]), generator=gen, device=like.device, dtype=like.dtype)
    v = v.expand_as(like).contiguous()
    normal = A.normal if hasattr(A, "normal") else (lambda u: A.adjoint(A(u)))
    lam = torch.zeros(like.shape[0], dtype=like.dtype, device=like.device)
    for _ in range(iters):
        v = v / expand(v.flatten(1).norm(dim=1).clamp_min(1e-30), v)
        w = normal(v)
        lam = (v * w).flatten(1).sum(1)  # Rayleigh quotient of the unit vector v
        v = w
    return lam.clamp_min(1e-12)


def gradient_step(A, like: Tensor, gamma: float | None, step_scale: float, power_iters: int,
                  extra_lipschitz: float = 0.0) -> Tensor:
    """Per-sample step (B, 1, ..., 1): `gamma`, or step_scale/(‖AᵀA‖ + extra_lipschitz)."""
    if gamma is not None:
        return expand(per_sample(gamma, like), like)
    return expand(step_scale / (normal_op_norm(A, like, power_iters) + extra_lipschitz), like)


@torch.no_grad()
def curvature(A, y: Tensor, x: Tensor, iters: int = 30, rel_eps: float = 1e-3) -> Tensor:
    """Estimate the data term's curvature ‖∇²g(x)‖ per sample, g = A.data_fidelity(·, y), by power iteration on
    finite differences of A.grad: v ← (∇g(x + εv) − ∇g(x))/ε (ε = rel_eps·‖x‖). For a linear operator this
    is ‖AᵀA‖ (normal_op_norm); for a nonlinear one it is the local counterpart at x."""
    gen = torch.Generator(device=x.device).manual_seed(0)
    v = torch.randn((1, *x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype).expand_as(x).contiguous()
    g0 = A.grad(x, y)
    eps = rel_eps * x.flatten(1).norm(dim=1).clamp_min(1e-3)
    lam = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(iters):
        v = v / expand(v.flatten(1).norm(dim=1).clamp_min(1e-30), v)
        w = (A.grad(x + expand(eps, x) * v, y) - g0) / expand(eps, x)
        lam = (v * w).flatten(1).sum(1).abs()
        v = w
    return lam.clamp_min(1e-12)


class ArmijoStep:
    """Per-sample backtracking (Armijo) step on the data term g(x) = A.data_fidelity(x, y) along −∇g, for
    operators without a Lipschitz constant (nonlinear ones): at every iteration the largest γ of
    γ₀·shrinkʲ (j = 0, 1, ...) with the sufficient decrease

        g(z − γ∇g(z)) ≤ g(z) − c·γ·‖∇g(z)‖²,

    where γ₀ = 1/L̂ and L̂ is the curvature of g at the start point (`curvature`, the nonlinear counterpart of
    ‖AᵀA‖), so the step never exceeds what the linear default would take there; backtracking shrinks it
    where g curves more. Each trial costs one forward A (no denoiser calls). With `extra_lipschitz` τ (RED's
    regulariser) the returned step is step_scale/(1/γ + τ), as step_scale/(‖AᵀA‖ + τ) for a linear A.
    `accepted` holds the last search's per-sample outcome (False only when max_backtracks ran out: the step
    is then the smallest one tried)."""

    def __init__(self, A, y: Tensor, like: Tensor, step_scale: float = 1.0, extra_lipschitz: float = 0.0,
                 power_iters: int = 30, shrink: float = 0.5, c: float = 1e-4, max_backtracks: int = 50):
        self.A, self.y, self.c, self.shrink = A, y, c, shrink
        self.step_scale, self.extra, self.max_backtracks = step_scale, extra_lipschitz, max_backtracks
        self.gamma0 = 1.0 / curvature(A, y, like, power_iters)
        self.gamma = self.gamma0
        self.accepted = torch.ones(like.shape[0], dtype=torch.bool, device=like.device)

    @torch.no_grad()
    def __call__(self, z: Tensor, grad: Tensor) -> Tensor:
        """The step (B, 1, ..., 1) for the gradient step from z along −grad (grad = ∇g(z))."""
        g0 = self.A.data_fidelity(z, self.y)
        slope = self.c * grad.flatten(1).pow(2).sum(1)
        gamma = self.gamma0.clone()
        ok = torch.zeros_like(self.accepted)
        for _ in range(self.max_backtracks):
            trial = self.A.data_fidelity(z - expand(gamma, z) * grad, self.y)
            ok = ok | (trial <= g0 - gamma * slope)          # NaN/inf trials fail the test
            if bool(ok.all()):
                break
            gamma = torch.where(ok, gamma, gamma * self.shrink)
        self.gamma, self.accepted = gamma, ok
        return expand(self.step_scale / (1.0 / gamma + self.extra), z)


def step_rule(A, y: Tensor, like: Tensor, gamma: float | None, step_scale: float, power_iters: int,
              extra_lipschitz: float = 0.0):
    """z, ∇g(z) ↦ the gradient step (B, 1, ..., 1): `gamma` when set, else step_scale/(‖AᵀA‖ + extra) for a
    linear operator (fixed), else a backtracking Armijo step on the data term (ArmijoStep), so the PnP
    gradient solvers run on nonlinear operators without a hand-set step."""
    if gamma is not None or A.is_linear:
        fixed = gradient_step(A, like, gamma, step_scale, power_iters, extra_lipschitz)
        return lambda z, grad: fixed
    return ArmijoStep(A, y, like, step_scale=step_scale, extra_lipschitz=extra_lipschitz, power_iters=power_iters)


def momentum(x: Tensor, x_prev: Tensor, t: float, accelerate: bool) -> tuple[Tensor, float]:
    """The next gradient point z and FISTA counter t: z = x (plain), or Nesterov/FISTA extrapolation
    z = x + (t − 1)/t_next·(x − x_prev) with t_next = (1 + √(1 + 4t²))/2."""
    if not accelerate:
        return x, t
    t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
    return x + ((t - 1.0) / t_next) * (x - x_prev), t_next


def _real(y: Tensor) -> Tensor:
    return y.real if y.is_complex() else y


def check_positive(**values: float | None) -> None:
    """Raise a ConfigError naming the first non-positive (or non-finite) setting."""
    for key, val in values.items():
        if val is not None and not (val > 0 and math.isfinite(val)):
            raise ConfigError(f"solver setting {key}={val} must be a positive number.")
