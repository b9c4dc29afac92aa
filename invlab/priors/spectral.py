"""A trained spectrum denoiser (invlab.nets.cnn1d.CNN1D) as a prior: `prior=tvcondnet` or `prior=cnn1d_nmr`.

denoise(y, σ) on spectra (B, 1, L): the unconditioned net is N(y); the conditioned one (TVCondNet) is
N(y, TV(y)) with TV(y) the exact 1-D TV solution at the λ rule it was trained with (its card's
`tv_weight`, λ = tv_weight·σ̂(y), invlab.priors.tv1d.tv_condition). Neither uses the σ it is given: the
net was trained over a range of noise levels and infers the level from the spectrum (TV's σ̂ likewise).
"""
from __future__ import annotations

import torch
from torch import Tensor

from invlab.errors import CheckpointError, ShapeError
from invlab.priors.base import Prior
from invlab.priors.checkpoint import load_checkpoint
from invlab.priors.tv1d import tv_condition


class SpectrumDenoiser(Prior):
    differentiable = False  # the TV condition is computed outside autograd
    input_ndim = 3          # takes (B, C, L) spectra, not (B, C, H, W) images

    def __init__(self, checkpoint: str, device: str | None = None):
        super().__init__()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        net, arch, card = load_checkpoint(checkpoint, device=device)
        if not str(arch.get("_target_", "")).endswith("CNN1D"):
            raise CheckpointError(f"{checkpoint} holds a {arch.get('_target_')}, not a 1-D spectrum denoiser "
                                  f"(invlab.nets.cnn1d.CNN1D); use prior=learned for image denoisers.")
        for p in net.parameters():
            p.requires_grad_(False)
        self.net, self.arch, self.card, self.checkpoint = net, arch, card, str(checkpoint)
        self.channels = int(arch.get("in_channels", 1))
        self.condition = bool(arch.get("condition", False))
        self.tv_weight = float(card.get("tv_weight", 0.0))
        if self.condition and not self.tv_weight > 0:
            raise CheckpointError(f"{checkpoint} is conditioned on a TV solution but its card has no tv_weight.")

    def describe(self) -> str:
        return f"SpectrumDenoiser({self.checkpoint}{', TV-conditioned' if self.condition else ''})"

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 3:
            raise ShapeError(f"{self.describe()} denoises spectra (B, C, L) but got shape {tuple(x.shape)}.")
        if x.shape[1] != self.channels:
            raise ShapeError(f"{self.describe()} takes {self.channels}-channel spectra, got {x.shape[1]}.")

    @torch.no_grad()
    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        cond = tv_condition(x, self.tv_weight) if self.condition else None
        return self.net(x, cond)
