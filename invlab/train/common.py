"""Helpers shared by the training modules and the `train.py` CLI."""
from __future__ import annotations

import math
import time
from collections import deque
from typing import Callable, Iterable, Sequence

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchmetrics import MeanMetric

from invlab.errors import ConfigError
from invlab.priors.checkpoint import build_net


def fixed_noise(x: Tensor, index: Sequence[int] | Tensor, seed: int, salt: int = 0) -> Tensor:
    """Standard normal noise shaped like x, drawn per sample from (seed, index, salt): the same for a
    given image whatever the batch size, device or rank, so held-out metrics are comparable."""
    out = torch.empty_like(x, device="cpu", dtype=torch.float32)
    for b, i in enumerate(torch.as_tensor(index).tolist()):
        g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(i) * 7_919 + int(salt)) & 0x7FFF_FFFF_FFFF)
        out[b] = torch.randn(x.shape[1:], generator=g)
    return out.to(device=x.device, dtype=x.dtype)


def psnr_per_image(x_hat: Tensor, x: Tensor) -> Tensor:
    """PSNR in dB of each image of the batch (data range 1), outputs clamped to [0, 1]."""
    mse = (x_hat.clamp(0, 1) - x).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


@torch.no_grad()
def denoising_psnr(net: nn.Module, batch: dict, sigma: float, seed: int, salt: int = 0) -> Tensor:
    """Per-image PSNR of net(x + σ·fixed noise, σ) against x."""
    x = batch["x"]
    y = x + sigma * fixed_noise(x, batch["index"], seed, salt)
    return psnr_per_image(net(y, torch.full((x.shape[0],), sigma, device=x.device, dtype=x.dtype)), x)


@torch.no_grad()
def evaluate_denoiser(net: nn.Module, dataset: Dataset, sigmas_255: Iterable[float], seed: int,
                      batch_size: int = 8, device: str | torch.device = "cpu") -> dict[str, float]:
    """Mean PSNR over the dataset at each σ (given in /255 units): {"psnr_15": ..., "psnr_25": ...}."""
    from torch.utils.data import DataLoader

    was_training = net.training
    net.eval()
    sums: dict[str, float] = {}
    count = 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        batch = {"x": batch["x"].to(device), "index": batch["index"]}
        count += batch["x"].shape[0]
        for s in sigmas_255:
            key = metric_key(s)
            sums[key] = sums.get(key, 0.0) + float(denoising_psnr(net, batch, s / 255.0, seed, salt=int(s * 100)).sum())
    net.train(was_training)
    return {k: v / max(count, 1) for k, v in sums.items()}


def metric_key(sigma_255: float) -> str:
    """`psnr_25` for σ=25/255 (`psnr_12.5` for fractional levels)."""
    return f"psnr_{int(sigma_255)}" if float(sigma_255).is_integer() else f"psnr_{sigma_255:g}"


class EMA(nn.Module):
    """Exponential moving average of a network's parameters (buffers are copied)."""

    def __init__(self, net: nn.Module, decay: float):
        super().__init__()
        import copy

        self.decay = float(decay)
        self.net = copy.deepcopy(net).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        for p_ema, p in zip(self.net.parameters(), net.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - self.decay)
        for b_ema, b in zip(self.net.buffers(), net.buffers()):
            b_ema.copy_(b)

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)


def lr_lambda(kind: str, max_steps: int, min_ratio: float = 0.01, milestones: Sequence[float] = (0.5, 0.75),
              gamma: float = 0.2, warmup_steps: int = 0, time_progress: Callable[[], float] | None = None):
    """A multiplier of the base LR per optimizer step: cosine to `min_ratio`, step decay, or constant.

    With `time_progress` (fraction of a wall-clock budget used), the schedule follows whichever of steps
    and time is further along, so a run on a busy machine still ends its decay when the budget runs out.
    """
    max_steps = max(int(max_steps), 1)
    if kind not in ("cosine", "step", "none"):
        raise ConfigError(f"module.scheduler must be cosine, step or none, got {kind!r}.")

    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
        t = min(1.0, max(step / max_steps, time_progress() if time_progress is not None else 0.0))
        if kind == "cosine":
            return warm * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
        if kind == "step":
            return warm * gamma ** sum(t >= m for m in milestones)
        return warm

    return f


class PriorModule(L.LightningModule):
    """What the prior-training modules share: the network and its optional EMA copy (state_dict keys
    `net.*`, `ema.net.*`), Adam with the `lr_lambda` schedule (stepping or wall-time budget, whichever is
    further along), EMA updates, the `val/psnr_<σ>` metrics, the loss/wall-time bookkeeping that train.py
    reads for the model card, and its round trip through Lightning checkpoints.

    A subclass calls `save_hyperparameters()` itself (the hparams are its own constructor's arguments),
    then `_setup_prior`, and implements `training_step` (logging through `_log_train_loss`); it overrides
    `val_denoiser` when what validation measures is not `export_net()` itself. Its hparams must include
    lr, weight_decay, scheduler, lr_min_ratio, warmup_steps, time_budget_s, val_sigmas and val_seed.
    """

    def _setup_prior(self, arch: dict, ema_decay: float | None, val_sigmas: Sequence[float],
                     ema_cls: type[EMA] = EMA) -> None:
        self.arch = dict(arch)
        self.net = build_net(self.arch)
        self.ema = ema_cls(self.net, ema_decay) if ema_decay else None
        self.val_psnr = nn.ModuleDict({_metric_attr(s): MeanMetric() for s in val_sigmas})
        self.recent_losses: deque[float] = deque(maxlen=100)
        self.wall_seconds = 0.0  # training time of earlier runs this one resumed from
        self._t0: float | None = None

    def init_weights(self, state: dict) -> None:
        """Start from another checkpoint's weights (fine-tuning); the EMA copy starts there too."""
        self.net.load_state_dict(state, strict=True)
        if self.ema is not None:
            self.ema.net.load_state_dict(state, strict=True)

    # --- what gets exported (train.py calls these) -----------------------------------------------------
    def export_net(self) -> nn.Module:
        return self.ema.net if self.ema is not None else self.net

    @property
    def final_loss(self) -> float | None:
        return sum(self.recent_losses) / len(self.recent_losses) if self.recent_losses else None

    def total_wall_seconds(self) -> float:
        return self.wall_seconds + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    # --- training --------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        self._t0 = time.perf_counter()

    def _log_train_loss(self, loss: Tensor, batch_size: int) -> None:
        self.recent_losses.append(float(loss.detach()))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=batch_size)

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

    # --- validation ------------------------------------------------------------------------------------
    def val_denoiser(self) -> nn.Module:
        """The `D(y, σ)` in [0, 1] units that validation measures."""
        return self.export_net()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        denoiser = self.val_denoiser()
        for s in self.hparams.val_sigmas:
            psnr = denoising_psnr(denoiser, batch, s / 255.0, self.hparams.val_seed, salt=int(s * 100))
            self.val_psnr[_metric_attr(s)].update(psnr)

    def on_validation_epoch_end(self) -> None:
        for s in self.hparams.val_sigmas:
            metric = self.val_psnr[_metric_attr(s)]
            self.log(f"val/{metric_key(s)}", metric.compute(), prog_bar=s == 25, sync_dist=False)
            metric.reset()

    # --- resume ----------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["invlab"] = {"wall_seconds": self.total_wall_seconds(), "recent_losses": list(self.recent_losses)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("invlab", {})
        self.wall_seconds = float(state.get("wall_seconds", 0.0))
        self.recent_losses.extend(state.get("recent_losses", []))


def _metric_attr(sigma_255: float) -> str:
    """metric_key without dots (a ModuleDict key): `psnr_12_5` for σ=12.5/255."""
    return metric_key(sigma_255).replace(".", "_")


class PatchesFromImages(Dataset):
    """Random patches of a dataset of whole images (e.g. `data=folder`), via invlab.data.patches.RandomPatches."""

    def __init__(self, images: Dataset, patch_size: int, length: int, seed: int = 0, augment: bool = True):
        from invlab.data.patches import RandomPatches

        arrays = [images[i]["x"].numpy() for i in range(len(images))]
        if not arrays:
            raise ConfigError("the training dataset is empty (check data.path and data.limit).")
        smallest = min(min(a.shape[-2:]) for a in arrays)
        if smallest < patch_size:
            raise ConfigError(f"patches.size={patch_size} is larger than the training images ({smallest} px); "
                              f"lower patches.size or set patches=null to train on whole images.")
        self.patches = RandomPatches(arrays, patch_size, length, seed, augment)

    def set_epoch(self, epoch: int) -> None:
        self.patches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, i: int) -> dict:
        return self.patches[i]


def training_dataset(dataset: Dataset, patches: dict | None, seed: int) -> Dataset:
    """The dataset as is when it already yields patches (has set_epoch) or `patches` is None; else random
    patches of its images."""
    if patches is None or hasattr(dataset, "set_epoch"):
        return dataset
    return PatchesFromImages(dataset, int(patches["size"]), int(patches["per_epoch"]), seed,
                             bool(patches.get("augment", True)))


def parse_duration(value) -> float | None:
    """Seconds in a Lightning `max_time` ("DD:HH:MM:SS", a dict of timedelta fields, or a number of seconds)."""
    import datetime as dt

    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        return dt.timedelta(**value).total_seconds()
    parts = [float(p) for p in str(value).split(":")]
    if len(parts) != 4:
        raise ConfigError(f"trainer.max_time must look like DD:HH:MM:SS, got {value!r}.")
    d, h, m, sec = parts
    return dt.timedelta(days=d, hours=h, minutes=m, seconds=sec).total_seconds()
