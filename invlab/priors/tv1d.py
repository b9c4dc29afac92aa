"""1-D total variation for spectra (B, C, L): the exact prox and a TV denoiser prior.

    prox_tv1d(y, lam) = argmin_u ½‖u − y‖² + λ·Σ_i |u_{i+1} − u_i|      (per channel of each spectrum)

`prox_tv1d` is exact (to round-off): Condat's direct algorithm (L. Condat, "A direct algorithm for 1D total
variation denoising", IEEE SPL 2013), the taut-string solution found in one left-to-right pass with local
backtracking, O(L) in practice. The package that implements it in C (`prox-tv`) does not build here (it
needs LAPACKE headers), so this is our own transcription of the published algorithm, run in float64 per
spectrum; tests/test_tv1d.py checks it against a long Chambolle–Pock run to 1e-6.

`tv1d_dual` is the *iterative* alternative (projected gradient on the dual, batched torch), what an
iterative TV solver costs; the TVCondNet table times both.

λ follows the noise level, λ = weight·σ (see invlab/priors/tv.py for why λ ∝ σ), and where σ is not known
(real spectra) it is estimated from the spectrum: σ̂ = MAD of the first differences / (0.6745·√2).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from invlab.errors import ConfigError, ShapeError
from invlab.priors.base import Prior, as_sigma


def _condat(y: np.ndarray, lam: float) -> np.ndarray:
    """Exact 1-D TV prox of one float64 signal (Condat 2013, algorithm as in the paper's C listing)."""
    n = y.shape[0]
    out = np.empty(n)
    if n == 0:
        return out
    if lam <= 0:
        out[:] = y
        return out
    k = k0 = kplus = kminus = 0
    umin, umax = lam, -lam
    vmin, vmax = y[0] - lam, y[0] + lam
    twolam = 2.0 * lam
    while True:
        while k == n - 1:  # reached the end: close the last segment(s)
            if umin < 0.0:
                out[k0:kminus + 1] = vmin
                k0 = kminus + 1
                k = kminus = k0
                vmin = y[k0]
                umin = lam
                umax = vmin + umin - vmax
            elif umax > 0.0:
                out[k0:kplus + 1] = vmax
                k0 = kplus + 1
                k = kplus = k0
                vmax = y[k0]
                umax = -lam
                umin = vmax + umax - vmin
            else:
                vmin += umin / (k - k0 + 1)
                out[k0:k + 1] = vmin
                return out
        umin += y[k + 1] - vmin
        if umin < -lam:  # a negative jump: the segment [k0, kminus] ends at vmin
            out[k0:kminus + 1] = vmin
            k0 = kminus + 1
            k = kplus = kminus = k0
            vmin = y[k0]
            vmax = vmin + twolam
            umin, umax = lam, -lam
            continue
        umax += y[k + 1] - vmax
        if umax > lam:  # a positive jump: the segment [k0, kplus] ends at vmax
            out[k0:kplus + 1] = vmax
            k0 = kplus + 1
            k = kplus = kminus = k0
            vmax = y[k0]
            vmin = vmax - twolam
            umin, umax = lam, -lam
            continue
        k += 1
        if umin >= lam:
            kminus = k
            vmin += (umin - lam) / (kminus - k0 + 1)
            umin = lam
        if umax <= -lam:
            kplus = k
            vmax += (umax + lam) / (kplus - k0 + 1)
            umax = -lam


def prox_tv1d(y: Tensor, lam: float | Tensor) -> Tensor:
    """Exact 1-D TV prox along the last axis of y (B, C, L), λ a float or per-sample (B,) tensor ≥ 0.
    Computed in float64 on the CPU and returned in y's dtype and device (no gradient)."""
    if y.dim() != 3:
        raise ShapeError(f"prox_tv1d expects spectra (B, C, L) but got shape {tuple(y.shape)}.")
    lam_b = torch.as_tensor(lam, dtype=torch.float64).reshape(-1)
    lam_b = lam_b.expand(y.shape[0]) if lam_b.numel() == 1 else lam_b
    if lam_b.numel() != y.shape[0] or bool((lam_b < 0).any()) or not bool(torch.isfinite(lam_b).all()):
        raise ConfigError(f"the TV weight λ must be finite, ≥ 0, one per spectrum; got {lam_b.tolist()[:4]}.")
    arr = y.detach().to("cpu", torch.float64).numpy()
    out = np.empty_like(arr)
    for b in range(arr.shape[0]):
        for c in range(arr.shape[1]):
            out[b, c] = _condat(arr[b, c], float(lam_b[b]))
    return torch.from_numpy(out).to(device=y.device, dtype=y.dtype)


def tv1d_dual(y: Tensor, lam: float | Tensor, iters: int = 500) -> Tensor:
    """The same prox by `iters` projected-gradient steps on the dual (step 1/4 = 1/‖D‖²), batched torch:
    u = y − Dᵀq with |q_i| ≤ λ. Converges as O(1/k); the iterative solver TVCondNet is compared with."""
    lam_b = as_sigma(lam, y).view(-1, 1, 1)
    q = torch.zeros_like(y[..., 1:])
    for _ in range(int(iters)):
        u = y - _dt(q)
        q = torch.maximum(torch.minimum(q + 0.25 * (u[..., 1:] - u[..., :-1]), lam_b), -lam_b)
    return y - _dt(q)


def _dt(q: Tensor) -> Tensor:
    """Dᵀq for forward differences D: (L−1) -> L."""
    z = q.new_zeros(q.shape[:-1] + (1,))
    return torch.cat((z, q), -1) - torch.cat((q, z), -1)


def noise_sigma(y: Tensor) -> Tensor:
    """σ̂ per spectrum (B,) from the median absolute first difference (robust to peaks and drift):
    for white noise of level σ, y_{i+1} − y_i ~ N(0, 2σ²) away from lines, and MAD/0.6745 estimates its std."""
    d = (y[..., 1:] - y[..., :-1]).flatten(1).abs()
    return d.median(dim=1).values / (0.6745 * math.sqrt(2.0))


class TV1D(Prior):
    """`prior=tv1d`: D(y, σ) = prox_tv1d(y, weight·σ); `method=exact` (Condat) or `iterative` (`tv1d_dual`,
    `iters` steps). `weight` is chosen on the validation spectra (experiments/tvcondnet/choose_lambda.py)."""

    differentiable = False
    input_ndim = 3          # takes (B, C, L) spectra, not (B, C, H, W) images

    def __init__(self, weight: float = 1.0, method: str = "exact", iters: int = 500, estimate_sigma: bool = False):
        super().__init__()
        if method not in ("exact", "iterative"):
            raise ConfigError(f"prior.method must be exact or iterative, got {method!r}.")
        if not weight >= 0:
            raise ConfigError(f"prior.weight must be ≥ 0, got {weight}.")
        self.weight, self.method, self.iters, self.estimate_sigma = float(weight), method, int(iters), estimate_sigma

    def describe(self) -> str:
        return f"TV1D(weight={self.weight:g}, {self.method})"

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 3:
            raise ShapeError(f"{self.describe()} denoises spectra (B, C, L) but got shape {tuple(x.shape)}.")

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        s = noise_sigma(x) if self.estimate_sigma else sigma
        lam = self.weight * s
        return prox_tv1d(x, lam) if self.method == "exact" else tv1d_dual(x, lam, self.iters)


def tv_condition(y: Tensor, weight: float) -> Tensor:
    """TVCondNet's condition: the exact TV solution of y (B, C, L) at λ = weight·σ̂(y), σ estimated from y
    itself (`noise_sigma`), so the same rule serves synthetic and real spectra."""
    return prox_tv1d(y, weight * noise_sigma(y))
