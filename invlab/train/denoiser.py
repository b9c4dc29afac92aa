"""Training a denoiser prior: y = x + σ·n with σ ~ U[sigma_min, sigma_max] per sample, loss on D(y, σ) − x.

Validation adds *fixed* seeded noise (see `common.fixed_noise`) at each σ of `val_sigmas` (in /255
units) and logs `val/psnr_<σ>`, the mean per-image PSNR, synchronised across ranks by torchmetrics.
With `time_budget_s` (the CLI passes `trainer.max_time`), the LR schedule ends when either the steps or
the time run out, whichever comes first. With `ema_decay` set, an EMA copy of the weights is validated and exported instead of the raw ones.
A batch with a "mask" (training from inpainting measurements, invlab.train.measured) gets the masked loss
mean over measured pixels of (D(ỹ + σn, σ) − ỹ)².
"""
from __future__ import annotations

from typing import Sequence

import torch

from invlab.errors import ConfigError
from invlab.train.common import PriorModule


class DenoiserModule(PriorModule):
    def __init__(self, arch: dict, sigma_min: float = 0.0, sigma_max: float = 50 / 255, loss: str = "mse",
                 lr: float = 1e-3, weight_decay: float = 0.0, scheduler: str = "cosine", lr_min_ratio: float = 0.01,
                 warmup_steps: int = 0, time_budget_s: float | None = None, ema_decay: float | None = None,
                 val_sigmas: Sequence[float] = (15, 25, 50), val_seed: int = 1234):
        super().__init__()
        if loss not in ("mse", "l1"):
            raise ConfigError(f"module.loss must be mse or l1, got {loss!r}.")
        if not 0 <= sigma_min <= sigma_max:
            raise ConfigError(f"need 0 <= module.sigma_min <= module.sigma_max, got {sigma_min}, {sigma_max}.")
        self.save_hyperparameters()
        self._setup_prior(arch, ema_decay, val_sigmas)

    # --- training (export, EMA, optimiser, validation and resume: PriorModule) -----------------------
    def on_train_start(self) -> None:
        super().on_train_start()
        self._set_data_epoch()

    def on_train_epoch_start(self) -> None:
        self._set_data_epoch()

    def _set_data_epoch(self) -> None:
        # random-patch datasets draw new crops each epoch (works in-process and with non-persistent workers)
        loader = self.trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x = batch["x"]
        lo, hi = self.hparams.sigma_min, self.hparams.sigma_max
        sigma = lo + (hi - lo) * torch.rand(x.shape[0], device=x.device, dtype=x.dtype)
        y = x + sigma.view(-1, 1, 1, 1) * torch.randn_like(x)
        out = self.net(y, sigma)
        err = out.float() - x
        err = err.pow(2) if self.hparams.loss == "mse" else err.abs()
        mask = batch.get("mask")  # measurements only (invlab.train.measured): the loss sees measured pixels
        loss = err.mean() if mask is None else (err * mask).sum() / mask.expand_as(err).sum().clamp_min(1.0)
        self._log_train_loss(loss, x.shape[0])
        return loss
