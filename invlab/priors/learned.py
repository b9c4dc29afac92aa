"""A prior given by a trained denoising network, loaded from a checkpoint (name or path)."""
from __future__ import annotations

import torch
from torch import Tensor

from invlab.errors import CheckpointError
from invlab.priors.base import Prior
from invlab.priors.checkpoint import load_checkpoint


class LearnedDenoiser(Prior):
    """`prior=learned prior.checkpoint=dncnn_gray` (shipped) or `prior.checkpoint=/path/to/net.safetensors`.

    The network stays in eval mode and its weights are frozen; gradients with respect to the *input*
    flow whenever the caller has autograd enabled (DPS, RED by autograd), and no graph is built otherwise.
    """

    differentiable = True

    def __init__(self, checkpoint: str, device: str | None = None, **speed):
        super().__init__()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        net, arch, card = load_checkpoint(checkpoint, device=device)
        if card.get("kind") == "diffusion":  # its net takes a timestep, not a noise level
            raise CheckpointError(f"{checkpoint} is a diffusion model; load it with its own prior config "
                                  f"(e.g. prior=ddpm_mnist) or invlab.priors.diffusion.DiffusionPrior.")
        if card.get("kind") == "conditional_video_diffusion":  # FLAIR's net takes a clip, t and a condition
            raise CheckpointError(f"{checkpoint} is a conditional video diffusion model; load it with prior=flair_faces "
                                  f"or prior=flair_frame (invlab.priors.video.ConditionalVideoPrior) and solver=flair.")
        if card.get("kind") == "spectrum_denoiser":  # a 1-D CNN for (B, C, L) spectra
            raise CheckpointError(f"{checkpoint} is a 1-D spectrum denoiser; load it with prior=tvcondnet or "
                                  f"prior=cnn1d_nmr (invlab.priors.spectral.SpectrumDenoiser).")
        for p in net.parameters():
            p.requires_grad_(False)
        self.net, self.arch, self.card = net, arch, card
        self.checkpoint = str(checkpoint)
        self.channels = int(card.get("channels") or arch.get("in_channels", 1))
        self.configure_speed(**speed)  # prior.compile / compile_mode / precision / channels_last (speed.py)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()  # a prior is never trained in place (and spectral norms must not drift)
        return self

    def describe(self) -> str:
        return f"LearnedDenoiser({self.checkpoint})"

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.net_call(x, sigma)
