"""Total variation as a denoiser: D(x, σ) = argmin_u ½‖u − x‖² + λ(σ)·TV(u), with λ(σ) = weight·σ.

TV is isotropic, per channel: TV(u) = Σ_{c,i,j} √((∂_h u)² + (∂_v u)²) with forward differences and
Neumann boundaries (the difference past the last row/column is 0), the discretisation of Chambolle (2004)
and of `skimage.restoration.denoise_tv_chambolle`, whose `weight` is our λ.

Why λ ∝ σ: TV is positively 1-homogeneous, so with λ(σ) = weight·σ the denoiser is equivariant to a
joint rescaling of image and noise, D(cx, cσ) = c·D(x, σ), as a learned denoiser of scale-invariant
images is; equivalently, the threshold it applies to gradients is a fixed multiple of the noise level,
the rule for soft-thresholding sparse signals. (A MAP denoiser for a fixed prior e^{−β·TV} would use
λ = βσ², which barely acts at small σ and flattens everything at large σ.) One `weight` then serves
every σ, and a solver sets the regularisation strength through the σ it asks for.

Solved on the dual by fast gradient projection (Beck & Teboulle 2009, FISTA on Chambolle's dual):
u = x − λ∇ᵀq with |q_ij| ≤ 1, a fixed number of iterations (no syncs), batched with per-sample λ.
The iterations are plain differentiable torch ops, so gradients flow by unrolling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from invlab.priors.base import Prior


def finite_diff(u: Tensor) -> Tensor:
    """Forward differences of (B, C, H, W) along H and W, zero past the edge: (B, C, 2, H, W)."""
    dv = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    dh = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1, 0, 0))
    return torch.stack((dv, dh), dim=2)


def finite_diff_adjoint(q: Tensor) -> Tensor:
    """∇ᵀq (= −div q) for q of shape (B, C, 2, H, W); the adjoint of `finite_diff`."""
    qv, qh = q[:, :, 0, :-1, :], q[:, :, 1, :, :-1]
    return (F.pad(qv, (0, 0, 1, 0)) - F.pad(qv, (0, 0, 0, 1))
            + F.pad(qh, (1, 0, 0, 0)) - F.pad(qh, (0, 1, 0, 0)))


def tv_norm(u: Tensor) -> Tensor:
    """Isotropic TV of each sample, shape (B,)."""
    return finite_diff(u).pow(2).sum(2).sqrt().flatten(1).sum(1)


def tv_prox(x: Tensor, lam: float | Tensor, iters: int = 100, return_dual: bool = False):
    """argmin_u ½‖u − x‖² + λ·TV(u) per sample (λ a float or a (B,) tensor).

    With return_dual, also returns the dual field q (|q| ≤ 1 pointwise, u = x − λ∇ᵀq), from which a
    duality gap certifies the solution.
    """
    lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device).expand(x.shape[0]).reshape(-1, 1, 1, 1)
    # the dual objective ½‖x − λ∇ᵀq‖² has gradient Lipschitz constant λ²‖∇‖² ≤ 8λ²
    step = 1.0 / (8.0 * lam.clamp_min(1e-12)).unsqueeze(2)
    q = torch.zeros((*x.shape[:2], 2, *x.shape[2:]), dtype=x.dtype, device=x.device)
    r, t = q, 1.0
    for _ in range(iters):
        u = x - lam * finite_diff_adjoint(r)
        q_next = r + step * finite_diff(u)
        q_next = q_next / q_next.pow(2).sum(2, keepdim=True).sqrt().clamp_min(1.0)  # onto |q| ≤ 1
        t_next = 0.5 * (1.0 + (1.0 + 4.0 * t * t) ** 0.5)
        r = q_next + ((t - 1.0) / t_next) * (q_next - q)
        q, t = q_next, t_next
    u = x - lam * finite_diff_adjoint(q)
    return (u, q) if return_dual else u


class TVPrior(Prior):
    """Total-variation denoiser with strength λ = weight·σ (see the module docstring)."""

    channels = None
    differentiable = True
    frame_wise = True      # videos: 2-D TV per frame (the per-frame TV baseline of the FLAIR table)

    def __init__(self, weight: float = 1.0, iters: int = 100):
        super().__init__()
        self.weight = float(weight)
        self.iters = int(iters)

    def describe(self) -> str:
        return f"TVPrior(weight={self.weight}, iters={self.iters})"

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        return tv_prox(x, self.weight * sigma, self.iters)
