"""Fixed-point machinery of the PnP steps: the step map T of RED / PnP-PGD and the forward iteration x ← T(x).

Shared by the solvers that solve through a fixed point (PnP-TTT, invlab/solvers/pnp_ttt.py) and by DEQ
training (invlab/train/deq.py), which imports it from here: the machinery belongs to the solvers' layer.

    red:     T(x) = x − γ(∇g(x) + τ(x − D(x, σ)))     (= solver=red method=gd, invlab/solvers/red.py)
    pnp_pgd: T(x) = D(x − γ∇g(x), σ)                  (= solver=pnp_pgd, invlab/solvers/pnp_pgd.py)

with g = ½‖A(x) − y‖² (∇g = A.grad). `fixed_point` iterates without gradients until every sample's relative
change ‖x_{k+1} − x_k‖/‖x_{k+1}‖ is ≤ tol, or max_iters, and says which.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from invlab.errors import ConfigError
from invlab.solvers.common import relative_change

STEPS = ("red", "pnp_pgd")


@dataclass
class FixedPoint:
    x: Tensor            # the last iterate (B, C, H, W), detached
    iters: int           # applications of T
    residual: Tensor     # (B,) relative change of the last application
    converged: bool      # every sample reached tol
    finite: bool         # no NaN/inf in the last iterate


def deq_step(kind: str, A, y: Tensor, denoiser: Callable[[Tensor, Tensor], Tensor], sigma: Tensor,
             gamma: Tensor, tau: float) -> Callable[[Tensor], Tensor]:
    """T: x ↦ the solver step (see the module docstring); sigma (B,), gamma (B, 1, ..., 1)."""
    if kind == "red":
        return lambda x: x - gamma * (A.grad(x, y) + tau * (x - denoiser(x, sigma)))
    if kind == "pnp_pgd":
        return lambda x: denoiser(x - gamma * A.grad(x, y), sigma)
    raise ConfigError(f"module.step must be one of {', '.join(STEPS)}, got {kind!r}.")


@torch.no_grad()
def fixed_point(T: Callable[[Tensor], Tensor], x0: Tensor, max_iters: int, tol: float) -> FixedPoint:
    """Iterate x ← T(x) from x0 until every sample's relative change is ≤ tol (or max_iters)."""
    x, residual, k = x0, torch.full((x0.shape[0],), float("inf"), device=x0.device), 0
    for k in range(1, int(max_iters) + 1):
        x_next = T(x)
        residual = relative_change(x_next, x)
        x = x_next
        if not torch.isfinite(x).all() or bool((residual <= tol).all()):
            break
    finite = bool(torch.isfinite(x).all())
    return FixedPoint(x.detach(), k, residual, finite and bool((residual <= tol).all()), finite)
