"""Training a denoiser prior: y = x + σ·n with σ ~ U[sigma_min, sigma_max] per sample, loss on D(y, σ) − x.

Validation adds *fixed* seeded noise (see `common.fixed_noise`) at each σ of `val_sigmas` (in /255
units) and logs `val/psnr_<σ>`, the mean per-image PSNR, synchronised across ranks by torchmetrics.
With `time_budget_s` (the CLI passes `trainer.max_time`), the LR schedule ends when either the steps or
the time run out, whichever comes first. With `ema_decay` set, an EMA copy of the weights is validated and exported instead of the raw ones.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from invlab.errors import ConfigError
from invlab.priors.checkpoint import build_net
from invlab.train.common import EMA, denoising_psnr, lr_lambda, metric_key


class DenoiserModule(L.LightningModule):
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
        self.arch = dict(arch)
        self.net = build_net(self.arch)
        self.ema = EMA(self.net, ema_decay) if ema_decay else None
        self.val_psnr = torch.nn.ModuleDict({metric_key(s).replace(".", "_"): MeanMetric() for s in val_sigmas})
        self.recent_losses: deque[float] = deque(maxlen=100)
        self.wall_seconds = 0.0  # training time of earlier runs this one resumed from
        self._t0: float | None = None

    # --- what gets exported -------------------------------------------------------------------------
    def export_net(self) -> torch.nn.Module:
        return self.ema.net if self.ema is not None else self.net

    @property
    def final_loss(self) -> float | None:
        return sum(self.recent_losses) / len(self.recent_losses) if self.recent_losses else None

    def total_wall_seconds(self) -> float:
        return self.wall_seconds + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    # --- training -----------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        self._t0 = time.perf_counter()
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
        loss = F.mse_loss(out.float(), x) if self.hparams.loss == "mse" else F.l1_loss(out.float(), x)
        self.recent_losses.append(float(loss.detach()))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=x.shape[0])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update(self.net)

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.Adam(self.net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        max_steps = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 \
            else self.trainer.estimated_stepping_batches
        budget = hp.time_budget_s
        progress = (lambda: self.total_wall_seconds() / budget) if budget else None
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(hp.scheduler, max_steps, hp.lr_min_ratio, warmup_steps=hp.warmup_steps,
                           time_progress=progress))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- validation ---------------------------------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        net = self.export_net()
        for s in self.hparams.val_sigmas:
            psnr = denoising_psnr(net, batch, s / 255.0, self.hparams.val_seed, salt=int(s * 100))
            self.val_psnr[metric_key(s).replace(".", "_")].update(psnr)

    def on_validation_epoch_end(self) -> None:
        for s in self.hparams.val_sigmas:
            metric = self.val_psnr[metric_key(s).replace(".", "_")]
            self.log(f"val/{metric_key(s)}", metric.compute(), prog_bar=s == 25, sync_dist=False)
            metric.reset()

    # --- resume -------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["invlab"] = {"wall_seconds": self.total_wall_seconds(), "recent_losses": list(self.recent_losses)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("invlab", {})
        self.wall_seconds = float(state.get("wall_seconds", 0.0))
        self.recent_losses.extend(state.get("recent_losses", []))
