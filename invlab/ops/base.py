"""The forward-operator contract and its automatic fallbacks.

Every operator maps a real image batch x of shape (B, *in_shape) to a measurement A(x) (real or
complex). Subclasses implement `forward`; linear ones may add `adjoint`, `pinv` and `prox_l2` in closed
form. Whatever they leave out falls back to a generic method here (autograd adjoint, conjugate
gradients on the normal equations, gradient descent for nonlinear proxes), so a ten-line operator gets
every solver for free.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from invlab.errors import ShapeError


def batch_dot(a: Tensor, b: Tensor) -> Tensor:
    """Real part of <a, b> per batch element, for real or complex tensors; shape (B,)."""
    return (a.conj() * b).real.flatten(1).sum(1) if a.is_complex() else (a * b).flatten(1).sum(1)


def conjugate_gradient(apply: Callable[[Tensor], Tensor], rhs: Tensor, x0: Tensor | None = None,
                       iters: int = 50, tol: float = 1e-6) -> Tensor:
    """Solve apply(x) = rhs for a symmetric positive (semi)definite `apply`, per batch element."""
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - apply(x)
    p = r.clone()
    rs = batch_dot(r, r)
    rhs_norm = batch_dot(rhs, rhs).clamp_min(1e-30)
    shape = (-1,) + (1,) * (rhs.dim() - 1)
    for _ in range(iters):
        if bool((rs <= tol**2 * rhs_norm).all()):
            break
        ap = apply(p)
        alpha = rs / batch_dot(p, ap).clamp_min(1e-30)
        x = x + alpha.view(shape) * p
        r = r - alpha.view(shape) * ap
        rs_new = batch_dot(r, r)
        p = r + (rs_new / rs.clamp_min(1e-30)).view(shape) * p
        rs = rs_new
    return x


class Operator(nn.Module):
    """A forward operator A acting on image batches of shape (B, *in_shape).

    Parameters that define the operator (kernels, masks, matrices) are buffers, so `.to(device)` moves
    them. Per-sample parameters carry a leading batch dimension; shared ones have batch size 1.
    `noise` is the measurement noise model bound by the Task that built the operator (or None).
    """

    is_linear: bool = False

    def __init__(self, in_shape: tuple[int, ...]):
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)
        self.noise = None

    @property
    def sigma_y(self) -> float:
        """Gaussian measurement noise level in [0,1] image units (0 when noiseless or unbound)."""
        return float(getattr(self.noise, "sigma", 0.0) or 0.0)

    # ---- the one method every operator implements ------------------------------------------
    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_input(self, x: Tensor) -> None:
        """Raise a one-sentence ShapeError when x does not have shape (B, *in_shape)."""
        if x.dim() != len(self.in_shape) + 1 or tuple(x.shape[1:]) != self.in_shape:
            raise ShapeError(
                f"{type(self).__name__} expects images of shape (B, {', '.join(map(str, self.in_shape))}) "
                f"but got {tuple(x.shape)}.")

    def __call__(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return super().__call__(x)

    # ---- fallbacks ---------------------------------------------------------------------------
    def data_fidelity(self, x: Tensor, y: Tensor) -> Tensor:
        """½‖A(x) − y‖² per batch element, shape (B,)."""
        r = self(x) - y
        return 0.5 * batch_dot(r, r)

    def grad(self, x: Tensor, y: Tensor) -> Tensor:
        """Gradient of ½‖A(x) − y‖² with respect to x (autograd; linear operators use Aᵀ(Ax − y))."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.data_fidelity(xg, y).sum(), xg)
        return g

    def prox_l2(self, z: Tensor, y: Tensor, rho: float | Tensor, iters: int = 100,
                lr: float | None = None) -> Tensor:
        """argmin_x ½‖A(x) − y‖² + ρ/2‖x − z‖², by gradient descent for nonlinear operators."""
        rho_t = torch.as_tensor(rho, dtype=z.dtype, device=z.device).reshape(-1, *([1] * (z.dim() - 1)))
        step = lr if lr is not None else 1.0 / (1.0 + float(rho_t.max()))
        x = z.clone()
        for _ in range(iters):
            x = x - step * (self.grad(x, y) + rho_t * (x - z))
        return x

    def pinv(self, y: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} is nonlinear and has no pseudo-inverse.")

    def baseline(self, y: Tensor) -> Tensor:
        """The plain reconstruction reported as `*_input` in results (A⁺y for linear operators)."""
        return self.pinv(y)


class LinearOperator(Operator):
    """A linear operator. Implement `forward`; everything else has a generic fallback."""

    is_linear = True

    def adjoint(self, y: Tensor) -> Tensor:
        """Aᵀy (Aᴴy for complex measurements), by autograd of x ↦ Re<A x, y>."""
        with torch.enable_grad():
            x = torch.zeros((y.shape[0], *self.in_shape), dtype=self._real_dtype(y), device=y.device,
                            requires_grad=True)
            (g,) = torch.autograd.grad(batch_dot(self(x), y).sum(), x)
        return g

    def normal(self, x: Tensor) -> Tensor:
        """AᵀA x."""
        return self.adjoint(self(x))

    def grad(self, x: Tensor, y: Tensor) -> Tensor:
        return self.adjoint(self(x) - y)

    def prox_l2(self, z: Tensor, y: Tensor, rho: float | Tensor, iters: int = 100,
                lr: float | None = None) -> Tensor:
        """(AᵀA + ρI)⁻¹(Aᵀy + ρz) by conjugate gradients."""
        rho_t = torch.as_tensor(rho, dtype=z.dtype, device=z.device).reshape(-1, *([1] * (z.dim() - 1)))
        return conjugate_gradient(lambda v: self.normal(v) + rho_t * v, self.adjoint(y) + rho_t * z,
                                  x0=z, iters=iters)

    def pinv(self, y: Tensor, iters: int = 100, eps: float = 1e-4) -> Tensor:
        """Least-squares solution of A x = y (lightly regularised CG on the normal equations)."""
        return conjugate_gradient(lambda v: self.normal(v) + eps * v, self.adjoint(y), iters=iters)

    @staticmethod
    def _real_dtype(y: Tensor) -> torch.dtype:
        return y.real.dtype if y.is_complex() else y.dtype


# ---- registry: every operator class registers itself so property tests cover all of them ----------
OPERATORS: dict[str, type[Operator]] = {}


def register(name: str):
    """Class decorator: `@register("blur")` adds an operator class to OPERATORS."""

    def deco(cls):
        if name in OPERATORS:
            raise KeyError(f"operator {name!r} registered twice")
        OPERATORS[name] = cls
        cls.registry_name = name
        return cls

    return deco
