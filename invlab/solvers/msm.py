"""MSM: sampling with a Measurement Score-based diffusion Model (Park et al. 2025; methods.md C).

An MSM ε-network is trained on subsampled images only (invlab/train/msm.py): fed a zero-filled view M ⊙ x_t
it predicts ε on supp(M), i.e. a *partial* estimate x̂0_M = (M x_t − √(1−ᾱ) ε̂)/√ᾱ = E[x0 | M x_t] on supp(M)
(for a Gaussian prior: the Tweedie estimate of the marginal of the observed entries, not the full one).
The stochastic sampler (reference `SuperResModel.forward`, "measurement_diffusion") walks DDIM steps on the
model's [-1, 1] scale and at each step t:
  1. draws K = `loops` masks from the training distribution (MaskSequence): a fresh mask, then masks that
     take every block not yet covered since the last reset (a cumulative coverage, reset once all is covered);
  2. ε_k = net(M_k x_t, t); combines ŷ0 = Σ_k M_k x̂0_k / Σ_k M_k, entries no mask covered keeping the
     previous step's estimate (combined_eps averages ε̂ the same way: x̂0 is affine in ε̂ at a fixed x_t);
  3. posterior sampling: ŷ0 ← ŷ0 − λ A⁺(A ŷ0 − y), λ = `stepsize_likelihood`. It is applied in the task's
     [0, 1] image units, x = (ŷ0 + 1)/2; for a linear A this is the same step on the model scale with
     y_m = 2y − A1 (what the reference's [-1, 1] operators see), so λ carries over unchanged. λ = 0: generation;
  4. clips ŷ0 to [-1, 1] and takes one step to t_prev from (ŷ0, ε̂ = (x_t − √ᾱ ŷ0)/√(1−ᾱ)).
Before steps 3-4 change ŷ0, step 4 equals the "partial DDIM update on supp(M_k)" averaged over k with shared
noise (each partial update is affine in x̂0_k). The reference instead overwrites x_t in place after each
mask, so later masks see some entries already at t_prev, and its outer step re-derives ε̂ from that
overwritten x_t; neither quirk is reproduced here.
Step kinds: `ddim` (σ_t = η·DDIM's σ; the reference's generation path, η = 1) and `dds` (noise η√(1−ᾱ'),
ε̂ weight √(1−η²)√(1−ᾱ'); the reference's inverse-problem path, η = 0.85).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import Tensor

from invlab.errors import ConfigError
from invlab.ops.mask import rolled_cells_mask
from invlab.priors.diffusion import from_model, to_model
from invlab.priors.schedule import DDPMSchedule, ddim_step, descending_pairs
from invlab.solvers.base import Solver, Trace
from invlab.solvers.diffusion_steps import data_residual, initial_noise, randn_like, require_diffusion

EpsFn = Callable[[Tensor, Tensor], Tensor]


class MaskSequence:
    """Per-sample MSM masks (B, 1, H, W): grid×grid blocks, exactly ⌊grid²·drop_ratio⌋ dropped, the grid
    rolled below one block (invlab.ops.mask.rolled_block_mask's law). A mask drawn after a reset is fresh
    (uniform blocks, new shift); the next ones keep that shift and take every block not yet covered first,
    then random covered ones up to the same count — so each mask is still a training-law mask, and K = 2
    covers the image when drop_ratio ≤ 0.5. Coverage resets once every block has been covered."""

    def __init__(self, batch: int, height: int, width: int, grid: int = 4, drop_ratio: float = 0.4,
                 generator: torch.Generator | None = None):
        n_cells = grid * grid
        self.n_keep = n_cells - int(n_cells * drop_ratio + 1e-9)
        if grid < 1 or not 0 <= drop_ratio < 1 or self.n_keep < 1:
            raise ConfigError(f"MSM masks need grid >= 1 and 0 <= drop_ratio < 1 keeping a block, got grid={grid}, "
                              f"drop_ratio={drop_ratio}.")
        self.size, self.grid, self.generator = (height, width), grid, generator
        self.gen_device = generator.device if generator is not None else torch.device("cpu")
        self.covered = torch.zeros(batch, n_cells, dtype=torch.bool, device=self.gen_device)
        self.shift = torch.zeros(batch, 2, dtype=torch.long, device=self.gen_device)

    def __call__(self) -> Tensor:
        (H, W), g, gen, dev = self.size, self.grid, self.generator, self.gen_device
        B = self.covered.shape[0]
        fresh = ~self.covered.any(1, keepdim=True)
        shift = torch.cat([torch.randint(max(1, H // g), (B, 1), generator=gen, device=dev),
                           torch.randint(max(1, W // g), (B, 1), generator=gen, device=dev)], dim=1)
        self.shift = torch.where(fresh, shift, self.shift)
        score = torch.rand(B, g * g, generator=gen, device=dev) + 2.0 * (~self.covered)  # uncovered first
        cells = torch.zeros(B, g * g, device=dev).scatter_(1, score.topk(self.n_keep, dim=1).indices, 1.0)
        self.covered |= cells.bool()
        self.covered &= ~self.covered.all(1, keepdim=True)   # everything covered: start a new round
        return rolled_cells_mask(cells.view(B, g, g), self.shift, H, W)[:, None]


def combined_eps(eps_fn: EpsFn, x_t: Tensor, t: Tensor, masks: Callable[[], Tensor],
                 loops: int) -> tuple[Tensor, Tensor]:
    """(Σ_k M_k ε̂_k / Σ_k M_k, Σ_k M_k) with ε̂_k = eps_fn(M_k ⊙ x_t, t): K network calls (0 where uncovered)."""
    acc, count = torch.zeros_like(x_t), torch.zeros_like(x_t[:, :1])
    for _ in range(int(loops)):
        m = masks().to(device=x_t.device, dtype=x_t.dtype)
        acc = acc + m * eps_fn(m * x_t, t).to(x_t.dtype)
        count = count + m
    return acc / count.clamp_min(1.0), count


def msm_x0(eps_fn: EpsFn, schedule: DDPMSchedule, x_t: Tensor, t: Tensor, masks: Callable[[], Tensor], loops: int,
           previous: Tensor) -> Tensor:
    """ŷ0 = Σ_k M_k x̂0_k / Σ_k M_k on the model scale; entries no mask covered keep `previous`."""
    eps, count = combined_eps(eps_fn, x_t, t, masks, loops)
    return torch.where(count > 0, schedule.x0_from_eps(x_t, t, eps), previous)


def msm_step(schedule: DDPMSchedule, x_t: Tensor, x0: Tensor, t: int, t_prev: int, eta: float, kind: str,
             noise: Tensor | None) -> Tensor:
    """x_{t_prev} from (x̂0, ε̂ = (x_t − √ᾱ x̂0)/√(1−ᾱ)): DDIM (kind="ddim") or the DDS-style step (kind="dds")."""
    tt = torch.full((x_t.shape[0],), float(t), dtype=torch.float64, device=x_t.device)
    eps = schedule.eps_from_x0(x_t, tt, x0)
    if kind == "ddim":
        return ddim_step(schedule, x0, eps, t, t_prev, eta, noise)
    s = (1.0 - float(schedule.alpha_bar(t_prev))) ** 0.5           # √(1−ᾱ'); 0 at the clean end
    out = (1.0 - s * s) ** 0.5 * x0 + s * (1.0 - eta**2) ** 0.5 * eps
    return out + s * eta * noise if eta > 0 and s > 0 else out


@torch.no_grad()
def msm_sample(eps_fn: EpsFn, schedule: DDPMSchedule, x_T: Tensor, *, steps: int, eta: float, kind: str, loops: int,
               masks: Callable[[], Tensor], skip: str = "uniform", generator: torch.Generator | None = None,
               clip_x0: bool = True, correct: Callable[[Tensor], Tensor] | None = None,
               trace: Callable[[int, Tensor], None] | None = None) -> Tensor:
    """The MSM stochastic sampler from x_T (model scale); returns the model-scale sample. `correct` maps ŷ0
    to ŷ0 (the likelihood step); `trace(k, ŷ0)` sees each step's estimate."""
    if kind not in ("ddim", "dds") or not 0 <= eta <= 1 or int(loops) < 1:
        raise ConfigError(f"MSM sampling needs eta_kind ddim or dds, 0 <= eta <= 1 and loops >= 1, got {kind!r}, "
                          f"{eta}, {loops}.")
    seq = schedule.timesteps(steps, skip).tolist()
    x, x0 = x_T, torch.zeros_like(x_T)
    for k, (t, t_prev) in enumerate(descending_pairs(seq)):
        tt = torch.full((x.shape[0],), float(t), dtype=torch.float64, device=x.device)
        x0 = msm_x0(eps_fn, schedule, x, tt, masks, loops, x0)
        if correct is not None:
            x0 = correct(x0)
        if clip_x0:
            x0 = x0.clamp(-1, 1)
        noise = randn_like(x, generator) if eta > 0 and t_prev >= 0 else None
        x = msm_step(schedule, x, x0, t, t_prev, eta, kind, noise)
        if trace is not None:
            trace(k, x0)
    return x


def likelihood_step(z0: Tensor, A, y: Tensor, lam: float) -> Tensor:
    """ŷ0 − λ A⁺(A ŷ0 − y) in [0, 1] image units (z0 on the model scale in and out)."""
    x = from_model(z0)
    return to_model(x - lam * A.pinv(A(x) - y).to(x.dtype))


def msm_mask_law(prior, grid: int | None, drop_ratio: float | None) -> tuple[int, float]:
    """The sampling masks' (grid, drop_ratio): given, else the prior card's training masks, else 4 / 0.4."""
    law = (getattr(prior, "card", None) or {}).get("msm") or {}
    return (int(grid if grid is not None else law.get("grid", 4)),
            float(drop_ratio if drop_ratio is not None else law.get("drop_ratio", 0.4)))


@dataclass
class MSM(Solver):
    prior_kind: ClassVar[str] = "diffusion"   # built with a diffusion prior (its config selects msm_mnist)
    needs: ClassVar[tuple[str, ...]] = ("adjoint",)  # the likelihood step uses A⁺ of a linear operator
    steps: int = 200                  # DDIM steps ('ddim200' in the paper's configs)
    eta: float = 0.85                 # 0.85 inverse problems (dds step), 1.0 generation (ddim step)
    eta_kind: str = "dds"             # dds | ddim (see the module doc)
    loops: int = 3                    # K masks per step (`stochastic_loop`): 3 generation, 2-3 inverse problems
    stepsize_likelihood: float = 1.75  # λ: 1.75 FFHQ SR×4 / box, 2.0 MRI ×4; 0 = unconditional generation
    grid: int | None = None           # sampling masks; null: the prior card's training masks
    drop_ratio: float | None = None
    skip: str = "uniform"             # timestep subsequence
    clip_x0: bool = True              # clamp ŷ0 to [-1, 1] (guided-diffusion clip_denoised)
    clip: bool = True                 # clamp the returned image to [0, 1]
    require_msm: bool = True          # refuse a checkpoint whose card has no `msm` flag (trained on full images)

    def check_prior(self, prior, x: Tensor | None = None) -> None:
        """The engine's preflight (and solve's first step): a diffusion prior, MSM-trained unless told otherwise."""
        require_diffusion(prior, "msm")
        card = getattr(prior, "card", None) or {}
        if self.require_msm and card and not card.get("msm"):
            raise ConfigError(f"solver msm needs a prior trained by MSM (its card has an msm flag), e.g. "
                              f"prior=msm_mnist, but {prior.describe()} was trained on full images; set "
                              f"solver.require_msm=false to run it anyway.")
        if x is not None:
            prior.check_input(x)

    def solve(self, y: Tensor, A, prior, *, x_init: Tensor | None, generator: torch.Generator | None,
              trace: Trace) -> Tensor:
        self.check_prior(prior)
        if self.stepsize_likelihood < 0:
            raise ConfigError(f"solver msm: stepsize_likelihood must be >= 0, got {self.stepsize_likelihood}.")
        grid, drop = msm_mask_law(prior, self.grid, self.drop_ratio)
        x_T = initial_noise(y, A, generator)   # x_init is unused: sampling starts from x_T ~ N(0, I)
        masks = MaskSequence(x_T.shape[0], *x_T.shape[-2:], grid, drop, generator)
        lam = float(self.stepsize_likelihood)
        correct = (lambda z0: likelihood_step(z0, A, y, lam)) if lam > 0 else None

        def record(k: int, z0: Tensor) -> None:
            trace(k, from_model(z0), data_residual=data_residual(A, y, z0))

        z = msm_sample(prior.eps, prior.schedule, x_T, steps=self.steps, eta=self.eta, kind=self.eta_kind,
                       loops=self.loops, masks=masks, skip=self.skip, generator=generator, clip_x0=self.clip_x0,
                       correct=correct, trace=record)
        out = from_model(z)
        return out.clamp(0, 1) if self.clip else out


@torch.no_grad()
def msm_generate(eps_fn: EpsFn, schedule: DDPMSchedule, shape: tuple[int, ...], *, steps: int = 50, eta: float = 1.0,
                 kind: str = "ddim", loops: int = 3, grid: int = 4, drop_ratio: float = 0.4, skip: str = "uniform",
                 generator: torch.Generator | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, clip: bool = True) -> Tensor:
    """Unconditional MSM samples in [0, 1] (the paper's generation: ddim, η = 1, K = 3)."""
    x_T = randn_like(torch.empty(shape, dtype=dtype, device=device), generator)
    masks = MaskSequence(shape[0], *shape[-2:], grid, drop_ratio, generator)
    z = msm_sample(eps_fn, schedule, x_T, steps=steps, eta=eta, kind=kind, loops=loops, masks=masks, skip=skip,
                   generator=generator, clip_x0=clip)
    return from_model(z).clamp(0, 1) if clip else from_model(z)
