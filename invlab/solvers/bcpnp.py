"""BC-PnP for blind deblurring (methods.md H; Gan et al., NeurIPS 2023): block-coordinate PnP over the
image x and the blur kernel k, for g(x, k) = ½‖y − k⊛x‖² (circular convolution).

    x-block:  w = x − γ_x ∇_x g(x, k),   x ← (1 − α_x)·w + α_x·D_{σx}(w)              (image prior)
    k-block:  v = k − γ_k P∇_k g(x, k),  k ← Π_Δ((1 − α_k)·v + α_k·m·D^k_{σk}(v / m)),  m = max(v)

D is the image prior (`prior=`), D^k the kernel denoiser (`kernel_prior`, a checkpoint trained on peak-
normalised kernels, invlab/data/kernels.py: hence the division by the peak m), Π_Δ the Euclidean
projection onto the simplex {k ≥ 0, Σk = 1}. P removes the mean of the kernel gradient: on the affine
set Σk = 1 only zero-sum directions matter (Π_Δ(v + c·1) = Π_Δ(v)), and without its huge DC component the
kernel gradient's Lipschitz constant L_k drops sharply; γ_k = kernel_step_scale / L_k with
L_k from a power iteration on the current image. The image step uses a sum-one kernel, for which
‖KᵀK‖ = 1, so γ_x is absolute. With α_x = 1 the x-block is exactly one PnP-PGD iteration (pnp_pgd.py).
`kernel_inner` k-steps follow each x-step (they cost FFTs and a 25×25 denoiser, nothing beside D(x));
`kernel_fidelity=gradient` takes the k-steps on ½‖∇(k⊛x − y)‖² instead (finite differences whiten x).

Modes: `blind` estimates k from `kernel_init` and never reads the task's operator beyond its image shape
and σ_y (the operator's kernel is never touched: it builds its own Blur from the estimate); `fixed` keeps
k = kernel_init (PnP with a wrong, assumed kernel); `oracle` runs the same x-block with the task's own
operator (PnP with the true kernel; any operator, where γ_x must suit ‖AᵀA‖). The final kernel estimate
is returned in `Result.estimates["kernel"]` (the engine reports its error as `kernel_error`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from invlab.errors import ConfigError
from invlab.ops.blur import Blur, embed_kernel
from invlab.ops.kernels import gaussian_kernel
from invlab.solvers.base import Solver, Trace
from invlab.solvers.common import check_positive, denoiser_sigma, expand, initial_iterate, relative_change

MODES = ("blind", "fixed", "oracle")


def kernel_grad(x: Tensor, r: Tensor, kh: int, kw: int) -> Tensor:
    """∇_k ½‖k⊛x − y‖² given the residual r = k⊛x − y, for a (B, 1, kh, kw) kernel shared by the channels.

    (k⊛x)[n] = Σ_m k[m]·x[n − m] (offsets m centred at (kh // 2, kw // 2), periodic), so the derivative at
    tap m is the circular cross-correlation Σ_n r[n]·x[n − m], summed over channels.
    """
    h, w = x.shape[-2:]
    corr = torch.fft.irfft2(torch.fft.rfft2(r) * torch.fft.rfft2(x).conj(), s=(h, w)).sum(1, keepdim=True)
    rows = (torch.arange(kh, device=x.device) - kh // 2) % h
    cols = (torch.arange(kw, device=x.device) - kw // 2) % w
    return corr[..., rows[:, None], cols[None, :]]


def finite_differences(x: Tensor) -> Tensor:
    """[∂_h x, ∂_v x] stacked on the channel axis (periodic forward differences): convolutions, so they
    commute with k⊛·, and they whiten a natural image's ~1/|ω| spectrum."""
    return torch.cat([x.roll(-1, -1) - x, x.roll(-1, -2) - x], 1)


def convolve(k: Tensor, x: Tensor) -> Tensor:
    """k⊛x, circular, with a (B or 1, 1, kh, kw) kernel (what invlab.ops.blur.Blur computes)."""
    h, w = x.shape[-2:]
    return torch.fft.irfft2(torch.fft.rfft2(x) * torch.fft.rfft2(embed_kernel(k, h, w)), s=(h, w))


def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of each sample's kernel (B, ..., kh, kw) onto {k ≥ 0, Σk = 1}.

    p = max(v − τ, 0) with τ the unique level where Σp = 1; τ is found from the sorted values
    (Held, Wolfe & Crowder 1974; Duchi et al. 2008): with u sorted decreasingly and c_j = Σ_{i≤j} u_i,
    ρ = max{j : u_j − (c_j − 1)/j > 0} and τ = (c_ρ − 1)/ρ.
    """
    flat = v.reshape(v.shape[0], -1)
    u, _ = flat.sort(dim=1, descending=True)
    css = u.cumsum(1) - 1.0
    j = torch.arange(1, flat.shape[1] + 1, device=v.device, dtype=v.dtype)
    rho = ((u - css / j) > 0).sum(1, keepdim=True)  # the condition holds exactly for j ≤ ρ
    tau = css.gather(1, rho - 1) / rho.to(v.dtype)
    return (flat - tau).clamp_min(0).reshape(v.shape)


def kernel_lipschitz(x: Tensor, kh: int, kw: int, iters: int = 20) -> Tensor:
    """Per-sample top eigenvalue of P·(∇_k of ½‖k⊛x − y‖²)'s Jacobian on zero-sum kernels, by power
    iteration from a fixed start: the Lipschitz constant of the projected kernel gradient."""
    gen = torch.Generator(device=x.device).manual_seed(0)
    v = torch.randn((1, 1, kh, kw), generator=gen, device=x.device, dtype=x.dtype).expand(x.shape[0], 1, kh, kw)
    lam = torch.ones(x.shape[0], device=x.device, dtype=x.dtype)
    for _ in range(iters):
        v = v - v.mean(dim=(-2, -1), keepdim=True)
        v = v / expand(v.flatten(1).norm(dim=1).clamp_min(1e-30), v)
        w = kernel_grad(x, convolve(v, x), kh, kw)
        w = w - w.mean(dim=(-2, -1), keepdim=True)
        lam = (v * w).flatten(1).sum(1)
        v = w
    return lam.clamp_min(1e-12)


@dataclass
class BCPnP(Solver):
    mode: str = "blind"                       # blind | fixed (k = kernel_init) | oracle (k = the task's kernel)
    iters: int = 200
    kernel_size: int = 25                     # support of the estimated kernel (blind / fixed)
    kernel_init: str = "gaussian"             # gaussian | delta
    kernel_init_std: float = 1.0              # std of the Gaussian kernel_init (pixels)
    gamma_x: float = 1.0                      # image step (‖KᵀK‖ = 1 for a sum-one kernel)
    alpha_x: float = 1.0                      # image relaxation: 1 = PnP-PGD step
    sigma_x: float = 15 / 255                 # image denoiser σ (used when sigma_x_factor is null)
    sigma_x_factor: float | None = None       # if set, σx = factor·σ_y
    kernel_prior: str | None = "dncnn_kernel"  # checkpoint of the kernel denoiser; null: no kernel prior
    kernel_fidelity: str = "intensity"        # intensity: ½‖k⊛x − y‖²; gradient: ½‖∇(k⊛x − y)‖² (preconditioned)
    kernel_step_scale: float = 1.0            # γ_k = kernel_step_scale / L_k
    alpha_k: float = 1.0                      # kernel relaxation
    sigma_k: float = 25 / 255                 # kernel denoiser σ, relative to the kernel's peak
    kernel_every: int = 1                     # a kernel update after every kernel_every image updates
    kernel_inner: int = 1                     # k-steps per kernel update (the k-block solved more exactly)
    kernel_start: int = 0                     # image updates before the first kernel update
    power_iters: int = 20                     # power-iteration steps for L_k
    lipschitz_every: int = 10                 # L_k is re-estimated every this many kernel updates (x drifts slowly)
    _kernel_prior: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def needs(self) -> tuple[str, ...]:
        """blind and fixed model y = k⊛x themselves: the task must measure blurred images."""
        return () if self.mode == "oracle" else ("image_measurements",)

    def kernel_denoiser(self, like: Tensor):
        """The kernel prior (loaded once from `kernel_prior`: a checkpoint name/path or a Prior), or None."""
        if self.kernel_prior is None:
            return None
        if self._kernel_prior is None:
            if isinstance(self.kernel_prior, str):
                from invlab.priors.learned import LearnedDenoiser

                self._kernel_prior = LearnedDenoiser(self.kernel_prior)
            else:
                self._kernel_prior = self.kernel_prior
        return self._kernel_prior.to(like.device)

    def initial_kernel(self, like: Tensor) -> Tensor:
        """kernel_init as a (1, 1, kernel_size, kernel_size) sum-one kernel."""
        n = self.kernel_size
        if self.kernel_init == "gaussian":
            k = gaussian_kernel(n, self.kernel_init_std)
        elif self.kernel_init == "delta":
            k = torch.zeros(n, n)
            k[n // 2, n // 2] = 1.0
        else:
            raise ConfigError(f"solver.kernel_init must be gaussian or delta, got {self.kernel_init!r}.")
        return k.to(device=like.device, dtype=like.dtype).view(1, 1, n, n)

    def image_step(self, x: Tensor, y: Tensor, K, prior, sigma: Tensor) -> Tensor:
        """w = x − γ_x Kᵀ(Kx − y); (1 − α_x)w + α_x D_σ(w), with K the blur by the estimate (or the task's A)."""
        w = x - self.gamma_x * K.grad(x, y)
        return prior.denoise(w, sigma) if self.alpha_x == 1.0 else \
            (1 - self.alpha_x) * w + self.alpha_x * prior.denoise(w, sigma)

    def kernel_step(self, x: Tensor, y: Tensor, k: Tensor, kernel_prior, lipschitz: Tensor | None = None) -> Tensor:
        """One k-block update (module docstring) with the image x held fixed; k is (B or 1, 1, kh, kw).
        `lipschitz`: L_k per sample, (B,), when already known (else a power iteration on x)."""
        kh, kw = k.shape[-2:]
        r = convolve(k, x) - y
        if self.kernel_fidelity == "gradient":  # ½‖∇(k⊛x − y)‖²: k⊛∇x against ∇y, same zero-noise minimiser
            x, r = finite_differences(x), finite_differences(r)
        if lipschitz is None:
            lipschitz = kernel_lipschitz(x, kh, kw, self.power_iters)
        g = kernel_grad(x, r, kh, kw)
        g = g - g.mean(dim=(-2, -1), keepdim=True)
        v = k - expand(self.kernel_step_scale / lipschitz, g) * g
        if kernel_prior is not None and self.alpha_k > 0:
            peak = v.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
            d = kernel_prior.denoise(v / peak, self.sigma_k) * peak
            v = (1 - self.alpha_k) * v + self.alpha_k * d
        return project_simplex(v)

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:
        if self.mode not in MODES:
            raise ConfigError(f"solver.mode must be one of {', '.join(MODES)}, got {self.mode!r}.")
        if self.kernel_fidelity not in ("intensity", "gradient"):
            raise ConfigError(f"solver.kernel_fidelity must be intensity or gradient, got {self.kernel_fidelity!r}.")
        check_positive(iters=self.iters, kernel_size=self.kernel_size, gamma_x=self.gamma_x,
                       alpha_x=self.alpha_x, sigma_x=self.sigma_x, sigma_k=self.sigma_k,
                       kernel_step_scale=self.kernel_step_scale, kernel_every=self.kernel_every,
                       kernel_inner=self.kernel_inner, lipschitz_every=self.lipschitz_every)
        x = initial_iterate(y, A, x_init)
        sigma = denoiser_sigma(self.sigma_x, self.sigma_x_factor, A, x)
        if self.mode == "oracle":  # plain PnP with the task's operator: the only mode that reads its kernel
            for it in range(self.iters):
                x_prev = x
                x = self.image_step(x, y, A, prior, sigma)
                trace(it, x, residual=relative_change(x, x_prev))
            if isinstance(getattr(A, "kernel", None), Tensor):
                trace.estimates["kernel"] = A.kernel.detach()
            return x
        k = self.initial_kernel(x).expand(x.shape[0], 1, self.kernel_size, self.kernel_size)
        kernel_prior = self.kernel_denoiser(x) if self.mode == "blind" else None
        updates, lipschitz = 0, None
        for it in range(self.iters):
            x_prev, k_prev = x, k
            x = self.image_step(x, y, Blur(tuple(x.shape[1:]), k), prior, sigma)
            if self.mode == "blind" and it >= self.kernel_start and (it - self.kernel_start) % self.kernel_every == 0:
                if updates % self.lipschitz_every == 0:
                    lipschitz = kernel_lipschitz(finite_differences(x) if self.kernel_fidelity == "gradient" else x,
                                                 self.kernel_size, self.kernel_size, self.power_iters)
                for _ in range(self.kernel_inner):  # k-steps are cheap (FFTs, a 25×25 denoiser) beside D(x)
                    k = self.kernel_step(x, y, k, kernel_prior, lipschitz)
                updates += 1
            trace(it, x, residual=relative_change(x, x_prev), kernel_change=relative_change(k, k_prev))
        trace.estimates["kernel"] = k.detach()
        return x
