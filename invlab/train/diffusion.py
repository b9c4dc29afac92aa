"""Training a DDPM prior: ε-prediction with uniform timesteps on the [-1, 1] scale (Ho et al. 2020).

    z0 = 2x − 1,  t ~ U{0, …, T−1},  x_t = √ᾱ_t z0 + √(1−ᾱ_t) ε,  loss = ‖ε_θ(x_t, t) − ε‖² (mean)

An EMA of the weights (`ema_decay`, warmed up as min(decay, (1+n)/(10+n))) is what validation uses and what
`train.py` exports. Each validation
logs `val/psnr_<σ>`: Tweedie denoising of the val set with fixed seeded noise at each σ of `val_sigmas`
(/255 units, the same protocol as the denoiser recipes, so the numbers compare), and (rank 0) writes a
grid of `sample_n` DDIM samples (`sample_steps`, fixed `sample_seed`) to `<run_dir>/samples/step<N>.png`,
also sent to W&B when that is the logger. bf16 autocast on CUDA comes from the trainer's precision.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invlab.errors import ConfigError
from invlab.priors.base import as_sigma
from invlab.priors.diffusion import from_model, to_model, tweedie_denoise
from invlab.priors.schedule import DDPMSchedule, ddim_sample
from invlab.train.common import EMA, PriorModule, evaluate_denoiser


class TweedieDenoiser(nn.Module):
    """`D(y, σ)` in [0, 1] units from an ε-network (what DiffusionPrior.denoise computes), for the shared
    denoiser evaluation helpers."""

    def __init__(self, eps_net: nn.Module, schedule: DDPMSchedule):
        super().__init__()
        self.eps_net, self.schedule = eps_net, schedule

    def forward(self, y: Tensor, sigma: Tensor | float) -> Tensor:
        return tweedie_denoise(self.eps_net, self.schedule, y, as_sigma(sigma, y))


class WarmupEMA(EMA):
    """EMA with the usual warm-up, decay_n = min(decay, (1 + n) / (10 + n)) at update n, so early validations
    and short runs see trained weights rather than the (zero-output) initialisation."""

    def __init__(self, net: nn.Module, decay: float):
        super().__init__(net, decay)
        self.max_decay = float(decay)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # saved in Lightning checkpoints

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        n = int(self.updates)
        self.decay = min(self.max_decay, (1 + n) / (10 + n))
        super().update(net)
        self.updates += 1


def sample_grid(x: Tensor, ncol: int = 8):
    """(N, C, H, W) in [0, 1] → a uint8 grid array, `ncol` images per row."""
    from invlab.utils.images import grid, to_uint8

    tiles = [to_uint8(img) for img in x]
    return grid([tiles[i:i + ncol] for i in range(0, len(tiles), ncol)], min_cell=56)


class DDPMModule(PriorModule):
    def __init__(self, arch: dict, beta_start: float = 1e-4, beta_end: float = 0.02, num_steps: int = 1000,
                 lr: float = 2e-4, weight_decay: float = 0.0, scheduler: str = "cosine", lr_min_ratio: float = 0.1,
                 warmup_steps: int = 0, time_budget_s: float | None = None, ema_decay: float | None = 0.999,
                 val_sigmas: Sequence[float] = (15, 25, 50, 100), val_seed: int = 1234,
                 sample_n: int = 64, sample_steps: int = 50, sample_seed: int = 0):
        super().__init__()
        if sample_n < 0 or sample_steps < 1:
            raise ConfigError(f"need module.sample_n >= 0 and module.sample_steps >= 1, got {sample_n}, "
                              f"{sample_steps}.")
        self.save_hyperparameters()
        self.schedule = DDPMSchedule(beta_start, beta_end, num_steps)
        self._setup_prior(arch, ema_decay, val_sigmas, ema_cls=WarmupEMA)

    # --- what gets exported (train.py calls these; export_net etc.: PriorModule) -----------------------
    def card(self) -> dict:
        """Model-card fields DiffusionPrior needs (kind, schedule) and that describe the training."""
        hp = self.hparams
        return {"kind": "diffusion", "prediction": "eps", "model_range": [-1.0, 1.0],
                "schedule": self.schedule.to_dict(), "loss": "mse(eps)", "ema_decay": hp.ema_decay,
                "val_metric": "Tweedie denoising PSNR at val_sigmas/255"}

    def evaluate(self, dataset, batch_size: int = 64) -> dict[str, float]:
        """Mean Tweedie-denoising PSNR of the exported weights on `dataset` at each σ of val_sigmas."""
        hp = self.hparams
        return evaluate_denoiser(self.val_denoiser(), dataset, hp.val_sigmas, hp.val_seed, batch_size, self.device)

    # --- training (EMA, optimiser and resume: PriorModule) ---------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        z0 = to_model(batch["x"])
        t = torch.randint(0, self.schedule.num_steps, (z0.shape[0],), device=z0.device)
        noise = torch.randn_like(z0)
        x_t = self.schedule.q_sample(z0, t, noise)
        loss = F.mse_loss(self.net(x_t, t.float()).float(), noise)
        self._log_train_loss(loss, z0.shape[0])
        return loss

    # --- validation ------------------------------------------------------------------------------------
    def val_denoiser(self) -> nn.Module:
        return TweedieDenoiser(self.export_net(), self.schedule)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if not self.trainer.sanity_checking and self.trainer.is_global_zero and self.hparams.sample_n > 0:
            self.write_samples(f"step{self.global_step:06d}")

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero and self.hparams.sample_n > 0:
            self.write_samples("final")

    @torch.no_grad()
    def samples(self, n: int | None = None, steps: int | None = None, seed: int | None = None) -> Tensor:
        """DDIM samples of the exported (EMA) weights, in [0, 1]."""
        hp = self.hparams
        n, steps = n or hp.sample_n, steps or hp.sample_steps
        gen = torch.Generator().manual_seed(hp.sample_seed if seed is None else seed)
        shape = (n, int(self.arch.get("in_channels", 1)), *self._image_size())
        z = ddim_sample(self.export_net(), self.schedule, shape, steps, 0.0, "uniform", gen, self.device)
        return from_model(z).clamp(0, 1)

    def _image_size(self) -> tuple[int, int]:
        loader = self.trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        return tuple(dataset[0]["x"].shape[-2:]) if dataset is not None else (28, 28)

    def write_samples(self, stem: str) -> Path:
        from invlab.utils.images import save_png

        folder = Path(self.trainer.default_root_dir) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}.png"
        save_png(sample_grid(self.samples().float().cpu()), path)
        if self.logger and hasattr(self.logger, "log_image"):
            self.logger.log_image(key="samples", images=[str(path)], step=self.global_step,
                                  caption=[f"DDIM {self.hparams.sample_steps} steps, seed {self.hparams.sample_seed}"])
        return path
