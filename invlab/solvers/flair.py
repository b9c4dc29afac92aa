"""FLAIR (Zou et al. 2023, "a conditional diffusion framework for face video restoration"; issue 15; not in
reference/methods.md, whose sections cover the other seed methods): conditional reverse diffusion on clips
(B, C, T, H, W) with an analytic data-consistency projection and a coarse-to-fine face-region weighting.

Per step t → t' of a DDIM subsequence of the prior's schedule (`steps` network calls in all; with `start` < 1
only its steps at t ≤ start·T, started from the baseline clip diffused to the first of them, a warm start as in
Chung et al.'s "come closer, diffuse faster"), on the model's [-1, 1] scale, with cond = condition(A, y) fixed
for the run (invlab.priors.video):
    ε̂ = ε_θ(z_t, t | cond),  x̂0 = (z_t − √(1−ᾱ_t) ε̂)/√ᾱ_t, clamped to [-1, 1], in image units x0
    δ = Aᵀ(AAᵀ + ε·I)⁻¹(y − A x0)           the data-consistency correction (A.project; ε = σ_y²/dc_var, or
                                              0 with dc_var=null: the exact projection onto {Ax = y})
    x0 ← x0 + W_k ⊙ G_k δ                    face weighting W_k, coarse-to-fine low-pass G_k (below)
    z_t' = DDIM(x̂0, ε̂ recomputed from x̂0, η)   (η = 0 deterministic; η = 1 ancestral)
The result is the last x0 (after its projection). For the box-average SR and the frame mask AAᵀ is a
multiple of I, so the projection is exact and costs two reshapes (tests/test_flair_ops.py checks it against
the dense formula); for the blur it is one FFT division. Without `A.project` (any other linear operator) the
correction is A⁺(y − A x0) by the operator's CG pseudo-inverse.

Coarse-to-fine face-region weighting (our fixed stand-in for the paper's face-specific enhancement, which
needs a face detector): W_k = w_k + (1 − w_k)·m, with m a soft central ellipse (the face region of the
centred LFW crops: centre `face_center`, semi-axes `face_axes` in normalised coordinates) and w_k rising
linearly from `face_bg_start` at the first step to 1 at the last, so the face region is pulled to the data
from the start and the background follows (the last step is the plain projection everywhere). G_k is a
Gaussian low-pass of std `coarse_sigma`·(1 − k/K_c) pixels over the first K_c = coarse_frac·steps steps
(coarse structure first, while x̂0 is a blurry guess) and the identity after (fine detail).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from invlab.errors import ConfigError
from invlab.priors.diffusion import from_model, to_model
from invlab.priors.schedule import ddim_step, descending_pairs
from invlab.priors.video import condition
from invlab.solvers.base import Solver, Trace
from invlab.solvers.common import sigma_y_per_sample
from invlab.solvers.diffusion_steps import initial_noise


def face_map(height: int, width: int, center=(0.0, 0.0), axes=(0.55, 0.7), edge: float = 0.1,
             device=None) -> Tensor:
    """(H, W) in [0, 1]: 1 inside the ellipse (normalised coordinates, x right, y down), a soft edge of width
    `edge` (in units of the semi-axes), 0 far outside."""
    v = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 - 1
    u = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 - 1
    r = (((u[None] - center[0]) / axes[0]) ** 2 + ((v[:, None] - center[1]) / axes[1]) ** 2).sqrt()
    return torch.sigmoid((1 - r) / edge)


def lowpass(x: Tensor, std: float) -> Tensor:
    """Gaussian blur (std pixels, reflect padding) of every frame of (B, C, T, H, W); identity for std ≤ 0."""
    if std <= 1e-3:
        return x
    radius = max(1, math.ceil(3 * std))
    g = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype) / std) ** 2)
    g = g / g.sum()
    B, C, T, H, W = x.shape
    ph, pw = min(radius, H - 1), min(radius, W - 1)   # reflect padding needs pad < size
    flat = F.pad(x.reshape(B * C * T, 1, H, W), (pw, pw, ph, ph), mode="reflect")
    flat = F.conv2d(flat, g[radius - pw:radius + pw + 1].view(1, 1, 1, -1))
    flat = F.conv2d(flat, g[radius - ph:radius + ph + 1].view(1, 1, -1, 1))
    return flat.reshape(B, C, T, H, W)


@dataclass
class FLAIR(Solver):
    prior_kind: ClassVar[str] = "conditional_video"
    needs: ClassVar[tuple[str, ...]] = ("adjoint",)
    steps: int = 50                     # DDIM steps = NFE
    eta: float = 0.0                    # DDIM η (0: deterministic, 1: ancestral)
    skip: str = "uniform"               # timestep subsequence (DDPMSchedule.timesteps)
    dc: bool = True                     # the data-consistency step (false: the conditional DPM alone)
    dc_var: float | None = 0.01         # assumed variance of x̂0's error: ε = σ_y²/dc_var; null: exact projection
    face_weight: bool = True            # the coarse-to-fine face-region weighting (false: W = 1, G = I)
    face_center: tuple[float, float] = (0.0, 0.0)
    face_axes: tuple[float, float] = (0.55, 0.7)
    face_bg_start: float = 0.3          # background weight at the first step (1 at the last)
    coarse_frac: float = 0.5            # share of the steps whose correction is low-passed
    coarse_sigma: float = 2.0           # its std in pixels at the first step (→ 0 at coarse_frac)
    start: float = 1.0                  # first step at t = start·T from the noised baseline clip (1: pure noise)
    clip: bool = True

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:
        if not callable(getattr(prior, "eps", None)) or getattr(prior, "input_ndim", None) != 5:
            raise ConfigError(f"solver=flair needs a conditional video diffusion prior (prior=flair_faces or "
                              f"prior=flair_frame), got {prior.describe() if prior is not None else None}.")
        if not 0 <= self.face_bg_start <= 1 or not 0 <= self.coarse_frac <= 1 or self.coarse_sigma < 0:
            raise ConfigError("flair: need 0 <= face_bg_start <= 1, 0 <= coarse_frac <= 1, coarse_sigma >= 0.")
        if not 0 < self.start <= 1:
            raise ConfigError(f"flair: start must be in (0, 1], got {self.start}.")
        if self.dc_var is not None and not self.dc_var > 0:
            raise ConfigError(f"flair: dc_var must be > 0 or null (exact projection), got {self.dc_var}.")
        schedule = prior.schedule
        cond = condition(A, y)
        shape = (y.shape[0], *A.in_shape)
        prior.check_input(cond[:, :shape[1]])
        randn = lambda: initial_noise(y, A, generator)  # noqa: E731  (B, *A.in_shape), the generator's stream
        sigma = sigma_y_per_sample(A, y)
        eps_dc = 0.0 if self.dc_var is None else float(sigma.max()) ** 2 / self.dc_var
        face = face_map(*shape[-2:], self.face_center, self.face_axes, device=y.device)
        seq = schedule.timesteps(self.steps, self.skip).tolist()
        top = self.start * (schedule.num_steps - 1)
        pairs = [(t, t_prev) for t, t_prev in descending_pairs(seq) if t <= top + 1e-9] or descending_pairs(seq)[-1:]
        n_coarse = self.coarse_frac * len(pairs)
        z = randn()
        if self.start < 1:  # diffuse the baseline clip to the first step (warm start): z_t = √ᾱ z_b + √(1−ᾱ) n
            ab = float(schedule.alpha_bar(pairs[0][0]))
            z = ab ** 0.5 * cond[:, :shape[1]] + (1 - ab) ** 0.5 * z
        x0 = from_model(z)
        for k, (t, t_prev) in enumerate(pairs):
            tt = torch.full((shape[0],), float(t), device=y.device)
            z0 = schedule.x0_from_eps(z, tt, prior.eps(z, tt, cond)).clamp(-1, 1)
            x0 = from_model(z0)
            if self.dc:
                delta = self.correction(A, x0, y, eps_dc)
                if self.face_weight:
                    std = self.coarse_sigma * (1 - k / n_coarse) if k < n_coarse else 0.0
                    w_bg = self.face_bg_start + (1 - self.face_bg_start) * k / max(len(pairs) - 1, 1)
                    delta = (w_bg + (1 - w_bg) * face) * lowpass(delta, std)
                x0 = x0 + delta
                z0 = to_model(x0).clamp(-1, 1)
            eps = schedule.eps_from_x0(z, tt, z0)
            z = ddim_step(schedule, z0, eps, t, t_prev, self.eta, randn() if self.eta > 0 and t_prev >= 0 else None)
            trace(k, x0, t=t, data_residual=(A(x0) - y).flatten(1).norm(dim=1))
        return x0.clamp(0, 1) if self.clip else x0

    @staticmethod
    def correction(A, x0: Tensor, y: Tensor, eps: float) -> Tensor:
        """Aᵀ(AAᵀ + ε I)⁻¹(y − A x0): closed form where the operator has `project`, else its pseudo-inverse."""
        project = getattr(A, "project", None)
        if callable(project):
            return project(x0, y, eps) - x0
        return A.pinv(y - A(x0), eps=max(eps, 1e-4))
