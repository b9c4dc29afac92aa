"""Training FLAIR's conditional video DPM (issue 15): DDPM ε-prediction on clips (B, C, T, H, W), conditioned
on a degraded copy of each clip (invlab.priors.video.condition).

Per step every clip of the batch is augmented (left-right flip and time reversal, each with probability ½),
given one of `tasks` (conf/task options: video_sr4, video_deblur, video_interp) at random, measured with
fresh noise (the task's seed stream at the global step) and turned into its condition; then

    z0 = 2x − 1,  t ~ U{0, …, T−1},  x_t = √ᾱ_t z0 + √(1−ᾱ_t) ε,  loss = ‖ε_θ(x_t, t, cond) − ε‖² (mean)

One network therefore serves the three tasks (the condition's content and its observed-frame channel say
which). The EMA weights are exported. Validation (and the card) reports, per task, the PSNR of the one-step
conditional estimate x̂0(x_t, t | cond) at t = `val_t` on the validation clips with fixed seeded noise: a
cheap held-out number that moves with training; the sampler's numbers are in experiments/flair/.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from invlab.errors import ConfigError
from invlab.priors.diffusion import from_model, to_model
from invlab.priors.schedule import DDPMSchedule
from invlab.priors.video import condition
from invlab.train.common import PriorModule, fixed_noise
from invlab.train.diffusion import WarmupEMA


class VideoDDPMModule(PriorModule):
    def __init__(self, arch: dict, tasks: Sequence[str] = ("video_sr4", "video_deblur", "video_interp"),
                 beta_start: float = 1e-4, beta_end: float = 0.02, num_steps: int = 1000, lr: float = 1e-3,
                 weight_decay: float = 0.0, scheduler: str = "cosine", lr_min_ratio: float = 0.1,
                 warmup_steps: int = 100, time_budget_s: float | None = None, ema_decay: float | None = 0.999,
                 augment: bool = True, val_t: int = 300, val_sigmas=(), val_seed: int = 1234):
        super().__init__()
        if not tasks:
            raise ConfigError("module.tasks must name at least one video task (e.g. [video_sr4]).")
        self.save_hyperparameters()
        self.schedule = DDPMSchedule(beta_start, beta_end, num_steps)
        self._setup_prior(arch, ema_decay, (), ema_cls=WarmupEMA)
        from invlab.utils.config import build, load_option

        self.task_names = [str(t) for t in tasks]
        self.tasks = [build(load_option("task", name)) for name in self.task_names]
        self.val_means = torch.nn.ModuleDict({name: MeanMetric() for name in self.task_names})

    def _conditions(self, x: Tensor, which: Tensor, seed: int, indices: Sequence[int]) -> Tensor:
        """The condition of every clip, clip j measured by task which[j]."""
        cond = x.new_empty(x.shape[0], 2, *x.shape[2:])
        for k, task in enumerate(self.tasks):
            pick = (which == k).nonzero().flatten()
            if pick.numel():
                A, y = task.measure(x[pick], [int(indices[j]) for j in pick.tolist()], seed=seed)
                cond[pick] = condition(A, y).to(x.dtype)
        return cond

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        x = batch["x"]
        if self.hparams.augment:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1, 1), x.flip(-1), x)
            rev = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(rev.view(-1, 1, 1, 1, 1), x.flip(2), x)
        which = torch.randint(0, len(self.tasks), (x.shape[0],))
        cond = self._conditions(x, which, int(self.global_step) + 1, batch["index"].tolist())
        z0 = to_model(x)
        t = torch.randint(0, self.schedule.num_steps, (z0.shape[0],), device=z0.device)
        noise = torch.randn_like(z0)
        loss = F.mse_loss(self.net(self.schedule.q_sample(z0, t, noise), t.float(), cond).float(), noise)
        self._log_train_loss(loss, z0.shape[0])
        return loss

    @torch.no_grad()
    def _val_psnr(self, net, batch: dict) -> dict[str, Tensor]:
        x, index = batch["x"], batch["index"]
        z0 = to_model(x)
        t = torch.full((x.shape[0],), int(self.hparams.val_t), device=x.device)
        x_t = self.schedule.q_sample(z0, t, fixed_noise(x, index, self.hparams.val_seed))
        out = {}
        for k, name in enumerate(self.task_names):
            cond = self._conditions(x, torch.full((x.shape[0],), k), 0, index.tolist())
            x0 = from_model(self.schedule.x0_from_eps(x_t, t, net(x_t, t.float(), cond))).clamp(0, 1)
            out[name] = 10 * torch.log10(1.0 / (x0 - x).pow(2).flatten(1).mean(1).clamp_min(1e-12))
        return out

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        for name, v in self._val_psnr(self.export_net(), batch).items():
            self.val_means[name].update(v)

    def on_validation_epoch_end(self) -> None:
        for name, m in self.val_means.items():
            self.log(f"val/psnr_x0_{name}", m.compute(), prog_bar=name == self.task_names[0], sync_dist=False)
            m.reset()

    @torch.no_grad()
    def evaluate(self, dataset, batch_size: int = 16) -> dict[str, float]:
        """Mean one-step x̂0 PSNR (dB) per task at t = val_t on `dataset` (the card's held-out metric)."""
        from torch.utils.data import DataLoader

        net = self.export_net().eval()
        sums, count = {}, 0
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            batch = {"x": batch["x"].to(self.device), "index": batch["index"]}
            for name, v in self._val_psnr(net, batch).items():
                sums[f"psnr_x0_t{self.hparams.val_t}_{name}"] = sums.get(f"psnr_x0_t{self.hparams.val_t}_{name}", 0.0) \
                    + float(v.sum())
            count += batch["x"].shape[0]
        return {k: v / max(count, 1) for k, v in sums.items()}

    def card(self) -> dict:
        hp = self.hparams
        return {"kind": "conditional_video_diffusion", "prediction": "eps", "model_range": [-1.0, 1.0],
                "schedule": self.schedule.to_dict(), "loss": "mse(eps)", "ema_decay": hp.ema_decay,
                "tasks": self.task_names, "frames": int(self.arch.get("frames", 8)),
                "temporal": bool(self.arch.get("temporal", True)), "layout": "(B, C, T, H, W)",
                "condition": "A.baseline(y) on [-1, 1] + observed-frame channel (invlab.priors.video.condition)",
                "val_metric": f"one-step conditional x0 PSNR at t={hp.val_t} per task (fixed noise)"}
