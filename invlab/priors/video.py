"""A conditional video diffusion prior (issue 15, FLAIR): `prior=flair_faces` (VideoUNet with temporal
attention and recurrent refinement) or `prior=flair_frame` (the same network without them: per frame).

Unlike the other priors it is conditioned on the measurement: `eps(x_t, t, cond)` with `cond =
condition(A, y)`, the clip the operator's own baseline gives (A.baseline(y): bicubic frames for SR, linear
frame blending for missing frames, a Wiener deconvolution for blur) on the [-1, 1] scale, plus one channel
that is +1 on observed frames and −1 on missing ones. Clips are (B, C, T, H, W) on the model's [-1, 1]
scale, as for DiffusionPrior; `denoise` (the unconditional [0, 1] protocol) is refused with a pointer to
solver=flair, the sampler that supplies the condition.
"""
from __future__ import annotations

import torch
from torch import Tensor

from invlab.errors import CheckpointError, ConfigError, ShapeError
from invlab.priors.base import Prior, channel_hint
from invlab.priors.diffusion import from_model, to_model
from invlab.priors.schedule import DDPMSchedule


def observed_frames(A, y: Tensor, frames: int) -> Tensor:
    """(T,) 1 where the operator measures the frame, 0 where it drops it (all ones unless A says otherwise)."""
    observed = getattr(A, "observed", None)
    return observed().to(y.device, torch.float32) if callable(observed) else torch.ones(frames, device=y.device)


@torch.no_grad()
def condition(A, y: Tensor) -> Tensor:
    """(B, 2, T, H, W) on the [-1, 1] scale: the baseline clip and the observed-frame indicator."""
    base = A.baseline(y)
    if base.dim() != 5:
        raise ShapeError(f"a video condition needs a clip-shaped baseline (B, C, T, H, W), got {tuple(base.shape)}.")
    B, C, T, H, W = base.shape
    seen = observed_frames(A, y, T).to(base.dtype).view(1, 1, T, 1, 1).expand(B, 1, T, H, W)
    return torch.cat([to_model(base[:, :1].clamp(0, 1)), 2 * seen - 1], 1)


class ConditionalVideoPrior(Prior):
    differentiable = False
    input_ndim = 5
    to_model = staticmethod(to_model)
    from_model = staticmethod(from_model)

    def __init__(self, checkpoint: str, device: str | None = None, **speed):
        super().__init__()
        from invlab.priors.checkpoint import load_checkpoint

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        net, arch, card = load_checkpoint(checkpoint, device=device)
        if not str(arch.get("_target_", "")).endswith("VideoUNet") or "schedule" not in card:
            raise CheckpointError(f"{checkpoint} holds a {arch.get('_target_')}, not a conditional video diffusion "
                                  f"model (invlab.nets.video_unet.VideoUNet with a schedule in its card).")
        for p in net.parameters():
            p.requires_grad_(False)
        self.net, self.arch, self.card, self.checkpoint = net.eval(), arch, card, str(checkpoint)
        self.schedule = DDPMSchedule.from_dict(card["schedule"])
        self.channels = int(arch.get("in_channels", 1))
        self.frames = int(arch.get("frames", 8))
        self.temporal = bool(arch.get("temporal", True))
        self.image_size = tuple(int(s) for s in card["image_size"]) if card.get("image_size") else None
        self.configure_speed(**speed)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()
        return self

    def describe(self) -> str:
        kind = "temporal" if self.temporal else "per-frame"
        return f"ConditionalVideoPrior({self.checkpoint}, {kind})"

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 5:
            raise ShapeError(f"{self.describe()} takes clips (B, C, T, H, W) but got shape {tuple(x.shape)}; "
                             f"use video data (data=face_clips or data=video_folder).")
        if x.shape[1] != self.channels:
            raise ShapeError(f"the prior {self.describe()} was trained on {self.channels}-channel clips but the data "
                             f"has {x.shape[1]} channels ({channel_hint(self.channels)}).")
        if self.temporal and x.shape[2] != self.frames:
            raise ShapeError(f"the prior {self.describe()} was trained on clips of {self.frames} frames but the data "
                             f"has {x.shape[2]}; set data.frames={self.frames}.")

    def eps(self, x_t: Tensor, t: Tensor | float, cond: Tensor) -> Tensor:
        """ε̂(x_t, t | cond) on the [-1, 1] scale; t a number or (B,). One NFE."""
        self.check_input(x_t)
        t = torch.as_tensor(t, dtype=torch.float32, device=x_t.device)
        t = t.expand(x_t.shape[0]) if t.dim() == 0 else t.reshape(x_t.shape[0])
        with self.stats.call(x_t):
            return self.net_call(x_t, t, cond)

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        raise ConfigError(f"{self.describe()} is conditioned on the measurement and has no plain denoiser; "
                          f"use it with solver=flair.")
