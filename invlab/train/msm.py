"""Training an MSM (Measurement Score-based diffusion Model; Park et al. 2025, methods.md C), noiseless case.

The training set is a set of measurements: `measure.task=inpaint_msm` (invlab/train/measured.py) measures each
image once with its own seeded mask M (a 4×4 grid of blocks, 40% dropped, rolled) and keeps only ỹ and M, so
the unobserved pixels never leave the dataset; this module masks again (y = M ⊙ (2ỹ − 1), model scale), so it
ignores whatever ỹ holds outside M. Per step (reference `training_losses_noiseless_msm`):

    t ~ U{0..T−1},  y_t = M ⊙ (√ᾱ_t y + √(1−ᾱ_t) n)      forward noising in measurement space, re-masked
    ε̂ = net(y_t, t)                                      the zero-filled image Mᴴy_t is the net input
    x̂0 = (y_t − √(1−ᾱ_t) ε̂)/√ᾱ_t,  loss = mean w_t (M(y − x̂0))²,  w_t = ᾱ_t/(1−ᾱ_t)

Since M y = y and M² = M, M(y − x̂0) = −√((1−ᾱ)/ᾱ) M(n − ε̂): the weighted loss is exactly mean (M(n − ε̂))²,
the form computed here (no division by √ᾱ_t near t = T). The mean is over all pixels, observed or not, like
the reference's mean_flat. The reference redraws the masks at every step (so over epochs it sees every
pixel of every image); here each image keeps its one mask, the claim being tested.

Validation and export (DDPMModule otherwise): `val/psnr_<σ>` is MSM Tweedie denoising of the clean held-out
digits — the noisy digit at σ, estimated through `val_loops` (≥ 2: they cover the image) seeded training-law
masks and averaged — and the sample grid comes from the MSM stochastic sampler (invlab/solvers/msm.py).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from invlab.errors import ConfigError
from invlab.priors.base import as_sigma
from invlab.priors.diffusion import to_model, tweedie_denoise
from invlab.priors.schedule import DDPMSchedule
from invlab.solvers.msm import MaskSequence, combined_eps, msm_generate
from invlab.train.diffusion import DDPMModule


class MSMDenoiser(nn.Module):
    """`D(y, σ)` in [0, 1] units from an MSM ε-network: Tweedie with ε̂ averaged over `loops` masked views
    (x̂0 is affine in ε̂ at fixed input, so this is the average of the partial x̂0 estimates). The masks come
    from `seed` at every call, so validation is reproducible."""

    def __init__(self, eps_net: nn.Module, schedule: DDPMSchedule, grid: int, drop_ratio: float, loops: int,
                 seed: int):
        super().__init__()
        if loops < 2:
            raise ConfigError(f"MSM validation needs module.val_loops >= 2 so the masks cover the image, got {loops}.")
        self.eps_net, self.schedule = eps_net, schedule
        self.grid, self.drop_ratio, self.loops, self.seed = grid, drop_ratio, loops, seed

    def forward(self, y: Tensor, sigma: Tensor | float) -> Tensor:
        masks = MaskSequence(y.shape[0], *y.shape[-2:], self.grid, self.drop_ratio,
                             torch.Generator().manual_seed(self.seed))

        def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
            return combined_eps(self.eps_net, x_t, t, masks, self.loops)[0]

        return tweedie_denoise(eps_fn, self.schedule, y, as_sigma(sigma, y))


class MSMModule(DDPMModule):
    def __init__(self, arch: dict, grid: int = 4, drop_ratio: float = 0.4, val_loops: int = 2,
                 sample_loops: int = 3, sample_eta: float = 1.0, beta_start: float = 1e-4, beta_end: float = 0.02,
                 num_steps: int = 1000, lr: float = 2e-4, weight_decay: float = 0.0, scheduler: str = "cosine",
                 lr_min_ratio: float = 0.1, warmup_steps: int = 0, time_budget_s: float | None = None,
                 ema_decay: float | None = 0.999, val_sigmas: Sequence[float] = (15, 25, 50, 100),
                 val_seed: int = 1234, sample_n: int = 64, sample_steps: int = 50, sample_seed: int = 0):
        if val_loops < 2 or sample_loops < 1:
            raise ConfigError(f"need module.val_loops >= 2 and module.sample_loops >= 1, got {val_loops}, "
                              f"{sample_loops}.")
        MaskSequence(1, 4 * grid, 4 * grid, grid, drop_ratio)  # validates grid / drop_ratio now
        super().__init__(arch, beta_start, beta_end, num_steps, lr, weight_decay, scheduler, lr_min_ratio,
                         warmup_steps, time_budget_s, ema_decay, val_sigmas, val_seed, sample_n, sample_steps,
                         sample_seed)

    def card(self) -> dict:
        hp = self.hparams
        return {**super().card(),
                "msm": {"grid": int(hp.grid), "drop_ratio": float(hp.drop_ratio), "masks": "one fixed mask per image"},
                "loss": "mean (M(eps_hat - n))^2 = mean w_t (M(y - x0_hat))^2, w_t = abar/(1 - abar) (noiseless MSM)",
                "val_metric": f"MSM Tweedie denoising PSNR ({int(hp.val_loops)} covering masks) at val_sigmas/255"}

    # --- training ----------------------------------------------------------------------------------------
    def msm_loss(self, y: Tensor, mask: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """mean (M ⊙ (ε̂ − n))² with ε̂ = net(M ⊙ (√ᾱ y + √(1−ᾱ) n), t); y is zero outside M (model scale)."""
        y_t = mask * self.schedule.q_sample(y, t, noise)
        eps = self.net(y_t, t.float()).float()
        return (mask * (eps - noise)).pow(2).mean()

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        mask = batch.get("mask")
        if mask is None:
            raise ConfigError("module msm trains from measurements only: set measure.task (e.g. inpaint_msm, as "
                              "experiment=train/msm_mnist does).")
        y = mask * to_model(batch["x"])
        t = torch.randint(0, self.schedule.num_steps, (y.shape[0],), device=y.device)
        loss = self.msm_loss(y, mask, t, torch.randn_like(y))
        self._log_train_loss(loss, y.shape[0])
        return loss

    # --- validation --------------------------------------------------------------------------------------
    def val_denoiser(self) -> nn.Module:
        hp = self.hparams
        return MSMDenoiser(self.export_net(), self.schedule, hp.grid, hp.drop_ratio, hp.val_loops, hp.val_seed)

    @torch.no_grad()
    def samples(self, n: int | None = None, steps: int | None = None, seed: int | None = None) -> Tensor:
        """MSM stochastic-sampler draws (DDIM, η = sample_eta, K = sample_loops) of the exported weights."""
        hp = self.hparams
        gen = torch.Generator().manual_seed(hp.sample_seed if seed is None else seed)
        shape = (n or hp.sample_n, int(self.arch.get("in_channels", 1)), *self._image_size())
        return msm_generate(self.export_net(), self.schedule, shape, steps=steps or hp.sample_steps,
                            eta=hp.sample_eta, kind="ddim", loops=hp.sample_loops, grid=hp.grid,
                            drop_ratio=hp.drop_ratio, generator=gen, device=self.device)
