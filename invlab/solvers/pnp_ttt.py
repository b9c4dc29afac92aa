"""PnP-TTT: test-time training of a PnP denoiser on the one measurement being solved (methods.md E;
Chandler, Shoushtari, Wohlberg & Kamilov 2023).

A PnP-PGD fixed point x̄(θ) = T_θ(x̄), T_θ(x) = D_θ(x − γAᵀ(Ax − y), σ) (`deq_step` in
invlab/solvers/fixed_point.py), is a function of the denoiser weights θ. Before solving, θ is adapted to
the measurement y with Adam steps on a self-supervised measurement loss; then the solve is PnP-PGD with
the adapted denoiser:

    repeat ttt_steps times:
        split the measured entries into held-in Λ and held-out Ω (fraction `holdout`; a new split every
        step when `resplit`); A_Λ, y_Λ = the operator and the data restricted to Λ
        x̄ ← fixed point of T_θ for (A_Λ, y_Λ): ttt_iters iterations from the previous x̄ (warm_start)
             or from A's baseline
        ℓ(θ) = ‖M_Ω(A T_θ(x̄) − y)‖² / ‖M_Ω y‖² per sample; one Adam step on θ
    x ← `iters` steps of T_θ with the full (A, y) from A's baseline (= solver=pnp_pgd with D_θ)

Choices and departures (documented, not hidden):
- Splitting: without it ℓ = ‖A x̄ − y‖² rewards a denoiser that passes the measured data, noise included,
  through, and checks nothing the fixed point did not already see; held-out entries make it a prediction
  loss (as SSDU). It needs an operator that is a 0/1 mask on its measurement: inpainting (`Mask`) and
  single-/multi-coil Cartesian MRI. The split has the mask's own granularity (pixels of a pixel mask,
  whole k-space columns of a column mask: the missing data the solve faces are columns too). In MRI the
  ACS lines (the fully sampled run of columns through the centre) are always held in, as in SSDU, or the
  loss is dominated by guessing the DC; single-coil MRI measures real images, so y(−k) = conj y(k) and
  column −k is held out with column k (else the held-out data would be read off its mirror). For any
  other operator, or holdout=0, ℓ is the plain ‖A x̄ − y‖²/‖y‖² on all data (a warning says so).
- Gradient: the exact implicit (DEQ) gradient is (∂T/∂θ)ᵀ(I − Jᵀ)⁻¹∇ℓ, J = ∂T/∂x at x̄. neumann_iters
  = K > 0 replaces the inverse by the truncated series Σ_{k≤K}(Jᵀ)ᵏ (K extra vector-Jacobian products;
  exact as K → ∞ when J's spectral radius is < 1; linear A only, whose A.grad is differentiable).
  neumann_iters = 0 is Jacobian-free backprop, as in DEQ training (invlab/train/deq.py): one step T_θ(x̄)
  with a graph from the detached fixed point, i.e. the inverse replaced by the identity (a descent
  direction when T is contractive). In MRI J ≈ ∂D/∂x on the unmeasured columns, near 1, and JFB did
  worse (experiments/pnp_ttt). x̄ is whatever ttt_iters iterations reach: with a non-contractive denoiser (dncnn_gray in
  MRI) PnP-PGD does not converge, and neither gradient is then exact.
- Per-sample adaptation: each sample of the batch trains its own deep copy of the prior's network (one
  Adam over all copies equals one Adam per copy: the loss is a sum and Adam acts elementwise), so a
  sample's denoiser sees only its own measurement. The prior object is never modified.
- NFE counts every forward evaluation of the network copies (one per batched call, as prior.denoise
  counts), added to prior.stats: ttt_steps·(ttt_iters + 1) + iters when tol = 0. Backward passes (per TTT
  step: one, plus neumann_iters vector-Jacobian products) are not counted; `seconds` includes them.
With ttt_steps=0 this is solver=pnp_pgd (same iterations, step and σ).
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from invlab.errors import ConfigError
from invlab.ops.mask import Mask
from invlab.ops.mri import MultiCoilMRI, SingleCoilMRI, reflect_frequencies
from invlab.priors.learned import LearnedDenoiser
from invlab.solvers.base import Solver, Trace
from invlab.solvers.common import check_positive, denoiser_sigma, gradient_step, initial_iterate, relative_change
from invlab.solvers.fixed_point import deq_step, fixed_point

log = logging.getLogger("invlab")
SPLITTABLE = (Mask, SingleCoilMRI, MultiCoilMRI)


class PerSampleDenoiser:
    """D(x, σ): sample b goes through its own copy of `net`; one call = one NFE in `stats`."""

    def __init__(self, net: nn.Module, batch: int, stats):
        self.nets = [copy.deepcopy(net).eval().requires_grad_(True) for _ in range(batch)]
        self.stats = stats

    def parameters(self) -> list[Tensor]:
        return [p for net in self.nets for p in net.parameters()]

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        with self.stats.call(x):
            return torch.cat([net(x[b:b + 1], sigma[b:b + 1]) for b, net in enumerate(self.nets)])


def acs_columns(mask: Tensor) -> Tensor:
    """(W,) bool: the run of fully sampled k-space columns through the centre column W // 2 (ACS lines)."""
    full = (mask != 0).flatten(0, -2).all(0)  # columns measured in every row of every sample
    acs, c = torch.zeros_like(full), full.shape[0] // 2
    if bool(full[c]):
        lo, hi = c, c
        while lo > 0 and bool(full[lo - 1]):
            lo -= 1
        while hi < full.shape[0] - 1 and bool(full[hi + 1]):
            hi += 1
        acs[lo:hi + 1] = True
    return acs


def _as_measurement(w: Tensor, y: Tensor) -> Tensor:
    """A (B, 1, H, W)-like entry weight shaped to broadcast against y (multi-coil y has a coil axis at 2)."""
    return (w.unsqueeze(2) if y.dim() == w.dim() + 1 else w).to(y.real.dtype)


def split_measurement(A, y: Tensor, holdout: float, generator: torch.Generator | None):
    """(A_Λ, y_Λ, M_Ω): a copy of the mask-type operator A that measures only the held-in entries, its data,
    and the 0/1 held-out weight on measured entries (broadcastable to y). One random split per sample."""
    shape = (y.shape[0], *A.mask.shape[1:])  # the mask's own granularity: columns of a column mask
    u = torch.rand(shape, generator=generator, device=None if generator is None else generator.device).to(y.device)
    if isinstance(A, (SingleCoilMRI, MultiCoilMRI)):
        keep = acs_columns(A.mask).to(u.device)  # ACS lines stay held in
        if isinstance(A, SingleCoilMRI):  # one draw per ±k pair (the lower index draws); ACS mirrors kept
            idx = torch.arange(u.shape[-2] * u.shape[-1], dtype=torch.float64, device=u.device).reshape(u.shape[-2:])
            u = torch.where(idx <= reflect_frequencies(idx), u, reflect_frequencies(u))
            keep = keep | reflect_frequencies(keep[None].to(u.dtype))[0].bool()
        u = torch.where(keep, torch.ones_like(u), u)
    held = (u < holdout).to(A.mask.dtype)
    measured = (A.mask != 0).to(A.mask.dtype)
    A_in = copy.deepcopy(A)
    A_in.mask = measured * (1 - held)
    return A_in, y * _as_measurement(1 - held, y), _as_measurement(measured * held, y)


def _rel_sq(r: Tensor, y: Tensor, w: Tensor | None) -> Tensor:
    """‖w r‖² / ‖w y‖² per sample, shape (B,)."""
    if w is not None:
        r, y = w * r, w * y
    return (r.abs() ** 2).flatten(1).sum(1) / (y.abs() ** 2).flatten(1).sum(1).clamp_min(1e-12)


@dataclass
class PnPTTT(Solver):
    iters: int = 100                          # PnP-PGD iterations of the final solve
    tol: float = 0.0                          # stop a fixed point once every sample's relative change ≤ tol
    gamma: float | None = None                # gradient step; None: step_scale/‖AᵀA‖
    step_scale: float = 1.0
    sigma_den: float = 0.04                   # denoiser noise level, [0,1] units
    sigma_den_factor: float | None = None     # if set, σ_den = factor·σ_y (per sample)
    power_iters: int = 30
    ttt_steps: int = 10                       # Adam steps on θ (0: plain PnP-PGD)
    ttt_iters: int = 20                       # fixed-point iterations per TTT step
    warm_start: bool = True                   # start each TTT fixed point from the last one (else from x0)
    lr: float = 1e-4                          # Adam learning rate
    holdout: float = 0.3                      # fraction of measured entries held out (0: plain loss)
    resplit: bool = True                      # a new random split every TTT step (else one fixed split)
    neumann_iters: int = 10                   # terms of the Neumann series for (I − ∂T/∂x)⁻ᵀ (0: JFB)

    prior_kind: ClassVar[str] = "learned"     # trains the network of a LearnedDenoiser prior

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:
        x0, sigma, step = self._setup(y, A, prior, x_init)
        D = self.adapt(y, A, prior, x0, sigma, step, generator=generator, trace=trace)
        T = deq_step("pnp_pgd", A, y, D, sigma, step, 0.0)
        x = x0
        with torch.no_grad():
            for k in range(self.iters):
                x_prev, x = x, T(x)
                residual = relative_change(x, x_prev)
                trace(self.ttt_steps + k, x, residual=residual)
                if not torch.isfinite(x).all() or bool((residual <= self.tol).all()):
                    break
        return x

    def _setup(self, y: Tensor, A, prior, x_init: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        check_positive(gamma=self.gamma, step_scale=self.step_scale, sigma_den=self.sigma_den, lr=self.lr)
        if (self.iters < 1 or self.ttt_iters < 1 or min(self.ttt_steps, self.neumann_iters) < 0 or self.tol < 0
                or not 0 <= self.holdout < 1):
            raise ConfigError("PnP-TTT needs iters, ttt_iters >= 1, ttt_steps, neumann_iters >= 0, tol >= 0 and "
                              "0 <= holdout < 1.")
        if not isinstance(prior, LearnedDenoiser):
            raise ConfigError(f"PnP-TTT trains the prior's denoising network, but {type(prior).__name__} has none; "
                              f"use a learned denoiser (e.g. prior=dncnn_gray or prior=learned).")
        if self.neumann_iters and self.ttt_steps and not A.is_linear:
            raise ConfigError(f"PnP-TTT's Neumann gradient differentiates A.grad, which {type(A).__name__} "
                              f"(nonlinear) computes detached; set solver.neumann_iters=0 (JFB).")
        x0 = initial_iterate(y, A, x_init)
        prior.check_input(x0)
        sigma = denoiser_sigma(self.sigma_den, self.sigma_den_factor, A, x0)
        return x0, sigma, gradient_step(A, x0, self.gamma, self.step_scale, self.power_iters)

    def adapt(self, y: Tensor, A, prior, x0: Tensor | None = None, sigma: Tensor | None = None,
              step: Tensor | None = None, *, generator: torch.Generator | None = None,
              trace: Trace | None = None) -> PerSampleDenoiser:
        """The per-sample denoisers after ttt_steps of test-time training on y (the module docstring)."""
        if x0 is None or sigma is None or step is None:
            x0, sigma, step = self._setup(y, A, prior, x0)
        D = PerSampleDenoiser(prior.net, x0.shape[0], prior.stats)
        split = self.holdout > 0 and isinstance(A, SPLITTABLE)
        if self.ttt_steps and self.holdout > 0 and not split:
            log.warning("PnP-TTT: %s is not a mask-type operator; training on the plain loss ‖Ax − y‖² "
                        "(no held-out entries).", type(A).__name__)
        opt = torch.optim.Adam(D.parameters(), lr=self.lr)
        x, A_in, y_in, out = x0, A, y, None
        for s in range(self.ttt_steps):
            if split and (out is None or self.resplit):
                A_in, y_in, out = split_measurement(A, y, self.holdout, generator)
            T = deq_step("pnp_pgd", A_in, y_in, D, sigma, step, 0.0)
            fp = fixed_point(T, x if self.warm_start else x0, self.ttt_iters, self.tol)
            if not fp.finite:
                log.warning("PnP-TTT: non-finite fixed point at TTT step %d; adaptation stopped there.", s)
                break
            x = fp.x
            with torch.enable_grad():
                opt.zero_grad(set_to_none=True)
                x_hat, r, loss = self._backward(T, x, A, y, out)
            opt.step()
            if trace is not None:
                held_in = None if out is None else _as_measurement(A_in.mask, y)
                trace(s, x_hat.detach(), heldout=loss.detach(), heldin=_rel_sq(r.detach(), y, held_in),
                      fp_iters=float(fp.iters))
        for p in D.parameters():
            p.grad = None
        return D

    def _backward(self, T, x: Tensor, A, y: Tensor, out: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Put dℓ/dθ into the weights' .grad: (∂T/∂θ)ᵀ Σ_{k≤K} (Jᵀ)ᵏ ∇ℓ, J = ∂T/∂x at the fixed point and
        K = neumann_iters (K = 0: JFB, one step with a graph from the detached fixed point)."""
        xs = x.detach().requires_grad_(self.neumann_iters > 0)
        x_hat = T(xs)
        r = A(x_hat) - y
        loss = _rel_sq(r, y, out)
        if self.neumann_iters == 0:
            loss.sum().backward()
            return x_hat, r, loss
        (g,) = torch.autograd.grad(loss.sum(), x_hat, retain_graph=True)
        v, term = g, g
        for _ in range(self.neumann_iters):
            (term,) = torch.autograd.grad(x_hat, xs, term, retain_graph=True)
            v = v + term
        x_hat.backward(v)
        return x_hat, r, loss


__all__ = ["PnPTTT", "PerSampleDenoiser", "acs_columns", "split_measurement"]
