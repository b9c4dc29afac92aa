"""The one DDPM noise schedule every diffusion sampler shares, and the unconditional DDIM/DDPM sampler.

Conventions (Ho et al. 2020; guided-diffusion; DDIM):
- discrete timesteps t = 0 .. T−1; β_t = linspace(β_start, β_end, T) by default, or one of diffusers' other
  β schedules, or an explicit table (`kind`, see `make_betas`), all in float64; ᾱ_t = Π_{s≤t} (1 − β_s);
  t = 0 already carries noise (ᾱ_0 = 1 − β_0); "t = −1" means clean (ᾱ = 1) and ends a sampler.
- forward process on the network's scale ([-1, 1] images z): x_t = √ᾱ_t z + √(1−ᾱ_t) ε.
- the same point in the "z + σ n" (variance-exploding) parametrisation: x_t / √ᾱ_t = z + σ_t n with
  σ_t = √((1 − ᾱ_t) / ᾱ_t). σ_t is on the [-1, 1] scale: an image-space ([0, 1]) noise level σ is 2σ here.
- continuous t: log σ_t is interpolated linearly between integer steps and ᾱ(t) = 1 / (1 + σ(t)²), so at
  integer t everything equals the discrete schedule and σ ↔ t is an exact, monotone bijection on
  [σ_0, σ_{T−1}] (≈ [0.010, 157] for the default linear schedule).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from invlab.errors import ConfigError

F64 = torch.float64


KINDS = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "table")


def make_betas(kind: str, beta_start: float, beta_end: float, num_steps: int) -> Tensor:
    """β_0..β_{T−1} in float64 for diffusers' `beta_schedule` names (the formulas of its DDPMScheduler, which
    evaluates them in float32):
    linear            linspace(β_start, β_end, T)                        (DDPM; guided-diffusion "linear")
    scaled_linear     linspace(√β_start, √β_end, T)²                     (latent diffusion)
    squaredcos_cap_v2 β_i = min(1 − f((i+1)/T) / f(i/T), 0.999), f(s) = cos((s + 0.008)/1.008 · π/2)²
                      (Nichol & Dhariwal's cosine schedule; β_start, β_end unused)
    sigmoid           sigmoid(linspace(−6, 6, T)) (β_end − β_start) + β_start   (GeoDiff)"""
    T = int(num_steps)
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=F64)
    if kind == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=F64) ** 2
    if kind == "squaredcos_cap_v2":
        f = torch.cos((torch.arange(T + 1, dtype=F64) / T + 0.008) / 1.008 * (math.pi / 2)) ** 2
        return (1.0 - f[1:] / f[:-1]).clamp(max=0.999)
    if kind == "sigmoid":
        return torch.sigmoid(torch.linspace(-6, 6, T, dtype=F64)) * (beta_end - beta_start) + beta_start
    raise ConfigError(f"unknown β schedule kind {kind!r}; choose one of {', '.join(KINDS)}.")


class DDPMSchedule:
    """DDPM schedule (linear β by default; see `make_betas` for the other kinds, or kind="table" with an explicit
    `betas` table) with σ ↔ t maps and DDIM timestep subsequences. All tables are float64 on CPU; every method
    returns float64 tensors on the device of its tensor argument."""

    def __init__(self, beta_start: float = 1e-4, beta_end: float = 0.02, num_steps: int | None = None,
                 kind: str = "linear", betas=None):
        if (kind == "table") != (betas is not None):
            raise ConfigError("an explicit betas table goes with kind='table' (and kind='table' needs betas).")
        if kind == "table":
            table = torch.as_tensor(betas, dtype=F64)
            if table.dim() != 1:
                raise ConfigError(f"the betas table must be 1-D, got shape {tuple(table.shape)}.")
            if num_steps is not None and int(num_steps) != len(table):
                raise ConfigError(f"num_steps={num_steps} but the betas table has {len(table)} entries.")
            num_steps, beta_start, beta_end = len(table), float(table[0]), float(table[-1])
        num_steps = 1000 if num_steps is None else int(num_steps)
        if kind not in KINDS:
            raise ConfigError(f"unknown β schedule kind {kind!r}; choose one of {', '.join(KINDS)}.")
        uses_range = kind in ("linear", "scaled_linear", "sigmoid")
        if (uses_range and not 0 < beta_start <= beta_end < 1) or num_steps < 2:
            raise ConfigError(f"need 0 < beta_start <= beta_end < 1 and num_steps >= 2, got "
                              f"{beta_start}, {beta_end}, {num_steps}.")
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.num_steps, self.kind = num_steps, kind
        self.betas = table if kind == "table" else make_betas(kind, self.beta_start, self.beta_end, num_steps)
        if not bool(torch.all((self.betas > 0) & (self.betas < 1))):
            raise ConfigError(f"every β_t must lie in (0, 1); the {kind} schedule has values in "
                              f"[{float(self.betas.min()):g}, {float(self.betas.max()):g}].")
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self.sigmas = ((1.0 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()
        self._log_sigmas = self.sigmas.log()

    # ---- description -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"kind": self.kind, "beta_start": self.beta_start, "beta_end": self.beta_end, "num_steps": self.num_steps}
        if self.kind == "table":
            d["betas"] = self.betas.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "DDPMSchedule":
        d = dict(d or {})
        return cls(float(d.get("beta_start", 1e-4)), float(d.get("beta_end", 0.02)), int(d.get("num_steps", 1000)),
                   str(d.get("kind", "linear")), d.get("betas"))

    def __repr__(self) -> str:
        betas = "" if self.kind == "squaredcos_cap_v2" else f", β {self.beta_start:g}→{self.beta_end:g}"
        return f"DDPMSchedule({self.kind}{betas}, T={self.num_steps})"

    @property
    def sigma_min(self) -> float:
        """σ_0 on the [-1, 1] scale (an image-space σ below sigma_min / 2 is below the schedule)."""
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    # ---- tables at (possibly continuous) t ----------------------------------------------------------
    @staticmethod
    def _t(t) -> Tensor:
        return torch.as_tensor(t, dtype=F64, device=t.device if isinstance(t, Tensor) else "cpu")

    def sigma(self, t: Tensor | float) -> Tensor:
        """σ(t) = √((1−ᾱ)/ᾱ) ([-1, 1] scale); t ∈ [0, T−1] may be fractional (log-linear in between)."""
        t = self._t(t).clamp(0, self.num_steps - 1)
        lo = t.floor().clamp(max=self.num_steps - 2)
        w = t - lo
        table = self._log_sigmas.to(t.device)
        lo = lo.long()
        return torch.exp((1 - w) * table[lo] + w * table[lo + 1])

    def alpha_bar(self, t: Tensor | float) -> Tensor:
        """ᾱ(t); t = −1 (or any t < 0) gives 1 (clean), integer t the discrete table exactly."""
        t = self._t(t)
        integer = (t == t.round()) & (t >= 0)
        exact = self.alphas_cumprod.to(t.device)[t.clamp(0, self.num_steps - 1).round().long()]
        out = torch.where(integer, exact, 1.0 / (1.0 + self.sigma(t) ** 2))
        return torch.where(t < 0, torch.ones_like(out), out)

    def t_from_sigma(self, sigma: Tensor | float, mode: str = "continuous") -> Tensor:
        """The timestep whose σ_t equals `sigma` ([-1, 1] scale), clamped to [0, T−1].

        mode="continuous": the fractional t with σ(t) = sigma exactly (inside the schedule's range);
        mode="nearest": the integer t with the nearest log σ_t (DiffPIR's `find_nearest`, in log space).
        """
        s = self._t(sigma)
        table = self._log_sigmas.to(s.device)
        log_s = s.clamp_min(1e-30).log()
        if mode == "nearest":
            return (log_s[..., None] - table).abs().argmin(-1).to(F64)
        if mode != "continuous":
            raise ConfigError(f"t mode must be continuous or nearest, got {mode!r}.")
        log_s = log_s.clamp(table[0], table[-1])
        hi = torch.searchsorted(table, log_s.contiguous()).clamp(1, self.num_steps - 1)
        lo = hi - 1
        w = (log_s - table[lo]) / (table[hi] - table[lo])
        return lo.to(F64) + w

    # ---- timestep subsequences for few-step samplers ------------------------------------------------
    def timesteps(self, n: int, skip: str = "uniform") -> Tensor:
        """n distinct integer timesteps in [0, T−1], ascending (a sampler walks them backwards, then to −1).

        uniform: t_k = ⌊k T / n⌋ (DDIM's "uniform" / diffusers' "leading" spacing; n=50 → 0, 20, ..., 980).
        quad:    t_k = ⌊(k √(0.8 T) / (n−1))²⌋ (DDIM paper's quadratic skip; dense at small t, top at 0.8 T).
        diffpir: DiffPIR's quad skip, r_k = ⌊√(k T² / (n−1))⌋ with r_{n−1} −= 1 counted in reverse time, i.e.
                 t_k = T − 1 − r_{n−1−k}: from 0 to T − 1, dense at small t.
        Both quadratic kinds repeat timesteps at their dense end for large n (the reference codes then take
        zero-length steps); here a repeat is pushed up to the next free step, so the n steps are distinct.
        """
        T, n = self.num_steps, int(n)
        if not 1 <= n <= T:
            raise ConfigError(f"the number of sampling steps must be in [1, {T}], got {n}.")
        if skip == "uniform":
            seq = (np.arange(n) * T) // n
        elif skip == "quad":
            seq = (np.linspace(0, np.sqrt(0.8 * T), n) ** 2).astype(np.int64)
        elif skip == "diffpir":
            r = np.sqrt(np.linspace(0, T**2, n)).astype(np.int64)
            r[-1] -= 1
            seq = (T - 1 - r)[::-1].copy()
        else:
            raise ConfigError(f"skip must be uniform, quad or diffpir, got {skip!r}.")
        for k in range(1, n):
            seq[k] = max(seq[k], seq[k - 1] + 1)
        seq = torch.as_tensor(seq, dtype=torch.long)
        if seq[-1] >= T or len(torch.unique(seq)) != n:
            raise ConfigError(f"{n} steps with skip={skip} do not fit in T={T} distinct timesteps; use fewer steps.")
        return seq

    # ---- forward process and Tweedie on the network's scale -----------------------------------------
    def q_sample(self, z0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = √ᾱ_t z0 + √(1−ᾱ_t) ε (t: (B,) integers or fractions)."""
        ab = self.alpha_bar(t.to(z0.device)).to(z0.dtype).view(-1, *[1] * (z0.dim() - 1))
        return ab.sqrt() * z0 + (1 - ab).sqrt() * noise

    def x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """Tweedie / DDPM x̂0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t."""
        ab = self.alpha_bar(t.to(x_t.device)).to(x_t.dtype).view(-1, *[1] * (x_t.dim() - 1))
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        ab = self.alpha_bar(t.to(x_t.device)).to(x_t.dtype).view(-1, *[1] * (x_t.dim() - 1))
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()


EpsFn = Callable[[Tensor, Tensor], Tensor]


def descending_pairs(seq: list[int]) -> list[tuple[int, int]]:
    """(t, t_prev) over an ascending timestep subsequence, from its last entry down; t_prev = −1 ends it."""
    return list(zip(reversed(seq), reversed([-1] + seq[:-1])))


def ddim_step(schedule: DDPMSchedule, x0: Tensor, eps: Tensor, t: int, t_prev: int, eta: float = 0.0,
              noise: Tensor | None = None) -> Tensor:
    """One DDIM step (Song et al. 2021, eq. 12) from x̂0 and ε̂ at step t to step t_prev (−1: the clean end):
    x_{t_prev} = √ᾱ' x̂0 + √(1 − ᾱ' − c²) ε̂ + c·noise,  c = η √((1−ᾱ')/(1−ᾱ)) √(1 − ᾱ/ᾱ').
    η = 0 is deterministic; η = 1 between consecutive steps is DDPM's ancestral step (variance β̃_t)."""
    ab, ab_prev = float(schedule.alpha_bar(t)), float(schedule.alpha_bar(t_prev))
    c = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5
    out = ab_prev**0.5 * x0 + max(1 - ab_prev - c**2, 0.0) ** 0.5 * eps
    if c > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs `noise`.")
        out = out + c * noise
    return out


def ddim_sample(eps_fn: EpsFn, schedule: DDPMSchedule, shape: tuple[int, ...], steps: int = 50, eta: float = 0.0,
                skip: str = "uniform", generator: torch.Generator | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32, clip: bool = True) -> Tensor:
    """Unconditional DDIM sampling on the network's [-1, 1] scale (returns z, not an image in [0, 1]).

    eta=0 is deterministic DDIM; eta=1 with steps=T is DDPM ancestral sampling with the "fixed small"
    posterior variance β̃_t = β_t (1−ᾱ_{t−1})/(1−ᾱ_t) (with fewer steps: the respaced DDPM).
    clip: clamp x̂0 to [-1, 1] and recompute ε̂ from it (guided-diffusion's clip_denoised).
    Noise comes from `generator` (drawn on its device, then moved), so a seed fixes the samples.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")

    def randn():
        return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)

    seq = schedule.timesteps(steps, skip).tolist()
    x = randn()
    for t, t_prev in descending_pairs(seq):
        tt = torch.full((shape[0],), float(t), device=device)
        eps = eps_fn(x, tt)
        x0 = schedule.x0_from_eps(x, tt, eps)
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = schedule.eps_from_x0(x, tt, x0)
        x = ddim_step(schedule, x0, eps, t, t_prev, eta, randn() if eta > 0 and t_prev >= 0 else None)
    return x
