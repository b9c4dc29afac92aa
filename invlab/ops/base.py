"""The forward-operator contract and its automatic fallbacks.

Every operator maps a real image batch x of shape (B, *in_shape) to a measurement A(x) (real or
complex). Subclasses implement `forward`; linear ones may add `adjoint`, `pinv` and `prox_l2` in closed
form. Whatever they leave out falls back to a generic method here (autograd adjoint, conjugate
gradients on the normal equations, gradient descent for nonlinear proxes), so a ten-line operator gets
every solver for free.

The CG fallbacks never stop unconverged without a word. Their iteration cap grows with the problem
(`cg_iters`: 100 + 4√n for n pixels per sample; CT at ρ = 1/16 with 30 angles needs 110 / 162 / 179
iterations for 16² / 32² / 64² images to reach the tolerance), they warm-start from whichever of z and the
previous prox solution of the same shape has the smaller residual (pinv starts at 0, which keeps it
the minimum-norm solution), and each solve records its final relative
residual ‖b − Mx‖/‖b‖ per sample. The operator keeps the worst one since `reset_cg_record()` in
`cg_record` (the solvers put it in results.csv as `cg_residual`), and a solve that ends above its
tolerance (`CG_TOL`, relative) logs one warning per operator class.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from invlab.errors import ShapeError

log = logging.getLogger("invlab")
CG_TOL = 1e-6          # relative residual the CG fallbacks solve to
_WARNED: set[str] = set()


def batch_dot(a: Tensor, b: Tensor) -> Tensor:
    """Real part of <a, b> per batch element, for real or complex tensors; shape (B,)."""
    return (a.conj() * b).real.flatten(1).sum(1) if a.is_complex() else (a * b).flatten(1).sum(1)


class CGResult(NamedTuple):
    x: Tensor             # the solution
    residual: Tensor      # (B,) final relative residual ‖rhs − apply(x)‖/‖rhs‖ (CG's recursive residual)
    iters: int            # iterations taken
    converged: bool       # every sample reached tol


def cg_solve(apply: Callable[[Tensor], Tensor], rhs: Tensor, x0: Tensor | None = None, iters: int = 50,
             tol: float = CG_TOL, r0: Tensor | None = None) -> CGResult:
    """Solve apply(x) = rhs for a symmetric positive (semi)definite `apply`, per batch element, until the
    relative residual is ≤ tol for every sample or `iters` iterations; r0 = rhs − apply(x0) if known."""
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = (rhs - apply(x)) if r0 is None else r0
    p = r.clone()
    rs = batch_dot(r, r)
    rhs_norm = batch_dot(rhs, rhs).clamp_min(1e-30)
    shape = (-1,) + (1,) * (rhs.dim() - 1)
    k = 0
    for k in range(iters + 1):
        if bool((rs <= tol**2 * rhs_norm).all()) or k == iters:
            break
        ap = apply(p)
        alpha = rs / batch_dot(p, ap).clamp_min(1e-30)
        x = x + alpha.view(shape) * p
        r = r - alpha.view(shape) * ap
        rs_new = batch_dot(r, r)
        p = r + (rs_new / rs.clamp_min(1e-30)).view(shape) * p
        rs = rs_new
    residual = (rs / rhs_norm).sqrt()
    return CGResult(x, residual, k, bool((residual <= tol).all()))


def conjugate_gradient(apply: Callable[[Tensor], Tensor], rhs: Tensor, x0: Tensor | None = None,
                       iters: int = 50, tol: float = CG_TOL) -> Tensor:
    """Solve apply(x) = rhs for a symmetric positive (semi)definite `apply`, per batch element (`cg_solve`'s x)."""
    return cg_solve(apply, rhs, x0, iters, tol).x


def cg_iters(shape: tuple[int, ...], iters: int | None) -> int:
    """The CG cap for images of `shape`: `iters` when given, else 100 + 4√n for n pixels per sample (CG
    needs O(√κ) iterations, and κ of an imaging operator's normal equations grows with the image size)."""
    return int(iters) if iters is not None else 100 + 4 * math.ceil(math.sqrt(math.prod(shape)))


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

    # ---- CG bookkeeping: the worst final relative residual since reset_cg_record() ---------------
    cg_record: Tensor | None = None

    def reset_cg_record(self) -> None:
        self.cg_record = None
        self._cg_last = None

    def _cg(self, apply: Callable[[Tensor], Tensor], rhs: Tensor, starts: tuple[Tensor, ...], iters: int | None,
            what: str, warm: bool = True) -> Tensor:
        """CG on apply(x) = rhs from the start with the smaller residual among `starts` and (warm) the previous
        solution when it has rhs's shape, dtype and device; records and, above tolerance, warns."""
        last = getattr(self, "_cg_last", None) if warm else None
        if last is not None and last.shape == rhs.shape and last.dtype == rhs.dtype and last.device == rhs.device:
            starts = (*starts, last)
        x0, r0 = None, None
        for s in starts:
            r = rhs - apply(s)
            if r0 is None or bool(batch_dot(r, r).sum() < batch_dot(r0, r0).sum()):
                x0, r0 = s, r
        res = cg_solve(apply, rhs, x0=x0, iters=cg_iters(self.in_shape, iters), tol=CG_TOL, r0=r0)
        self._cg_last = res.x.detach()
        worst = res.residual.detach()
        self.cg_record = worst if self.cg_record is None or self.cg_record.shape != worst.shape \
            else torch.maximum(self.cg_record, worst)
        if not res.converged and type(self).__name__ not in _WARNED:
            _WARNED.add(type(self).__name__)
            log.warning("%s %s: conjugate gradients stopped at the cap of %d iterations with relative residual "
                        "%.3g > tolerance %g (recorded as cg_residual; pass iters=... to raise the cap). "
                        "Warned once per operator class.", type(self).__name__, what, res.iters,
                        float(worst.max()), CG_TOL)
        return res.x

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

    def prox_l2(self, z: Tensor, y: Tensor, rho: float | Tensor, iters: int | None = None,
                lr: float | None = None) -> Tensor:
        """(AᵀA + ρI)⁻¹(Aᵀy + ρz) by conjugate gradients (cap `cg_iters`, warm start, residual recorded)."""
        rho_t = torch.as_tensor(rho, dtype=z.dtype, device=z.device).reshape(-1, *([1] * (z.dim() - 1)))
        return self._cg(lambda v: self.normal(v) + rho_t * v, self.adjoint(y) + rho_t * z, (z,), iters, "prox_l2")

    def pinv(self, y: Tensor, iters: int | None = None, eps: float = 1e-4) -> Tensor:
        """Least-squares solution of A x = y (lightly regularised CG on the normal equations)."""
        rhs = self.adjoint(y)   # from 0 (never warm): CG then stays in the range of Aᵀ, the min-norm solution's
        return self._cg(lambda v: self.normal(v) + eps * v, rhs, (torch.zeros_like(rhs),), iters, "pinv", warm=False)

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
