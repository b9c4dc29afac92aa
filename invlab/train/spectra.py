"""Training a 1-D spectrum denoiser on (noisy, clean) pairs: TVCondNet (`net.condition=true`: input = the
noisy spectrum and its exact TV solution) or the same CNN without the condition (Zou et al. 2024).

The pairs come from the dataset (`data=nmr_synth`: items x, y with fixed seeded noise over a range of SNRs);
the TV condition of each training spectrum is computed once (λ = tv_weight·σ̂(y), invlab.priors.tv1d.
tv_condition) and cached by index, so after the first epoch a step costs only the network. Augmentation:
each spectrum is reversed along its axis with probability ½ (TV commutes with the reversal, so the cached
condition is reversed with it). Loss: MSE on the spectrum. Validation logs val/snr, val/snr_gain (dB,
mean over spectra) and val/psnr; the export card carries the same on the validation set and, with
`test_data` (a data config), on the test set too.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import MeanMetric

from invlab.errors import ConfigError
from invlab.priors.tv1d import tv_condition
from invlab.train.common import PriorModule
from invlab.utils.spectra import psnr_db, snr_db


class SpectrumDenoiserModule(PriorModule):
    def __init__(self, arch: dict, tv_weight: float = 1.0, lr: float = 1e-3, weight_decay: float = 0.0,
                 scheduler: str = "cosine", lr_min_ratio: float = 0.01, warmup_steps: int = 0,
                 time_budget_s: float | None = None, ema_decay: float | None = None, flip: bool = True,
                 test_data: dict | None = None, val_sigmas=(), val_seed: int = 0):
        super().__init__()
        if not tv_weight > 0:
            raise ConfigError(f"module.tv_weight must be > 0, got {tv_weight}.")
        self.save_hyperparameters()
        self._setup_prior(arch, ema_decay, ())
        self.condition = bool(arch.get("condition", False))
        self.val_means = torch.nn.ModuleDict({k: MeanMetric() for k in ("snr", "snr_gain", "psnr")})
        self._tv_cache: dict[tuple[str, int], Tensor] = {}

    def cond(self, y: Tensor, index: Tensor | None, split: str = "train") -> Tensor | None:
        """The TV condition of each spectrum of the batch (cached by split and dataset index), or None."""
        if not self.condition:
            return None
        if index is None:
            return tv_condition(y, self.hparams.tv_weight)
        keys = [(split, int(i)) for i in index]
        todo = [j for j, k in enumerate(keys) if k not in self._tv_cache]
        if todo:
            fresh = tv_condition(y[todo], self.hparams.tv_weight).cpu()
            for j, t in zip(todo, fresh):
                self._tv_cache[keys[j]] = t
        return torch.stack([self._tv_cache[k] for k in keys]).to(y.device, y.dtype)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        x, y = batch["x"], batch["y"]
        c = self.cond(y, batch["index"])
        if self.hparams.flip:
            rev = torch.rand(x.shape[0], device=x.device) < 0.5
            x, y = _flip_where(x, rev), _flip_where(y, rev)
            c = None if c is None else _flip_where(c, rev)
        loss = (self.net(y, c) - x).pow(2).mean()
        self._log_train_loss(loss, x.shape[0])
        return loss

    @torch.no_grad()
    def _scores(self, net, batch: dict, split: str | None = None) -> dict[str, Tensor]:
        x, y = batch["x"], batch["y"]
        c = self.cond(y, batch["index"] if split else None, split or "")
        out = net(y, c)
        snr = snr_db(out, x)
        return {"snr": snr, "snr_gain": snr - snr_db(y, x), "psnr": psnr_db(out, x)}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        for k, v in self._scores(self.export_net(), batch, "val").items():
            self.val_means[k].update(v)

    def on_validation_epoch_end(self) -> None:
        for k, m in self.val_means.items():
            self.log(f"val/{k}", m.compute(), prog_bar=k == "snr_gain", sync_dist=False)
            m.reset()

    @torch.no_grad()
    def evaluate(self, dataset, batch_size: int = 64, prefix: str = "") -> dict[str, float]:
        """Mean snr, snr_gain, psnr (dB) of the exported net over a dataset of (x, y) pairs."""
        from torch.utils.data import DataLoader

        net = self.export_net().eval()
        sums: dict[str, float] = {}
        count = 0
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            batch = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            for k, v in self._scores(net, batch).items():
                sums[prefix + k] = sums.get(prefix + k, 0.0) + float(v.sum())
            count += batch["x"].shape[0]
        return {k: v / max(count, 1) for k, v in sums.items()}

    def card(self) -> dict:
        """Model-card fields (train.py's export): the TV rule, and the test-set metrics with `test_data`."""
        from invlab.utils.config import build

        hp = self.hparams
        out = {"kind": "spectrum_denoiser", "loss": "mse", "tv_weight": float(hp.tv_weight),
               "condition": self.condition, "image_size": None, "value_range": None,
               "scale": "spectra divided by their maximum; sigma = 1/SNR"}
        if hp.test_data:
            test = build(dict(hp.test_data))
            out["test_data"] = str(hp.test_data.get("name", "?"))
            out["test_metrics"] = {k: round(v, 3) for k, v in self.evaluate(test).items()}
        return out


def _flip_where(t: Tensor, rev: Tensor) -> Tensor:
    return torch.where(rev.view(-1, 1, 1), t.flip(-1), t)
