"""The one protocol every solver consumes: `prior.denoise(x, sigma) -> x̂`.

`x` is a batch (B, C, H, W) in [0, 1] units, `sigma` a float or a (B,) tensor in the same units. A prior with
`frame_wise = True` (TV) also takes clips (B, C, T, H, W) and denoises each frame as an image, which lets the
image solvers (PnP-ADMM, HQS, ...) run per-frame baselines on the video tasks.
The base class counts network evaluations (NFE) and times each call as it happens, so a solver's
`Result` can report NFE and a benchmark can compare wall time with the network time inside the solve.
A network prior calls its net through `net_call`, which applies the prior's speed settings (compile,
precision, memory layout: invlab/priors/speed.py) in this one place for every prior kind.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from invlab.errors import ShapeError
from invlab.priors.speed import Speed
from invlab.utils.video import fold_frames, unfold_frames


def channel_hint(channels: int) -> str:
    """What to change in the data config for a prior of `channels` channels (colour priors need colour data)."""
    if channels == 3:
        return "a colour prior: data.grayscale=false for a folder, or data=color_test"
    if channels == 1:
        return "a grayscale prior: data.grayscale=true for a folder, or data=gray_test"
    return f"a {channels}-channel prior"


@dataclass
class CallStats:
    nfe: int = 0
    seconds: float = 0.0

    def reset(self) -> None:
        self.nfe, self.seconds = 0, 0.0

    @contextmanager
    def call(self, x: Tensor):
        """Count one network evaluation and add its forward time (CUDA synchronised on both sides; a
        backward pass through the network, as in DPS, is not part of it)."""
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        yield
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        self.seconds += time.perf_counter() - t0
        self.nfe += 1


def as_sigma(sigma: float | Tensor, x: Tensor) -> Tensor:
    """Noise level as a (B,) tensor on x's device and dtype."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return s.expand(x.shape[0]).clone() if s.dim() == 0 else s.reshape(x.shape[0])


class Prior(nn.Module):
    """Base class of all priors. Subclasses implement `_denoise(x, sigma)` with sigma a (B,) tensor.

    Attributes subclasses set:
      channels: the channel count the prior was trained for (None: any).
      differentiable: whether gradients flow through `denoise` (needed by DPS, RED-by-autograd, ...).
    """

    channels: int | None = None
    differentiable: bool = True
    frame_wise: bool = False   # an image prior that also denoises videos (B, C, T, H, W), each frame on its own

    def __init__(self):
        super().__init__()
        self.stats = CallStats()
        self.speed = Speed()

    def configure_speed(self, compile: bool = False, compile_mode: str = "default", precision: str = "fp32",
                        channels_last: bool = False) -> None:
        """`prior.compile`, `prior.compile_mode`, `prior.precision`, `prior.channels_last` (speed.py); call it
        after `self.net` is set."""
        self.speed = Speed(compile, compile_mode, precision, channels_last)
        self.speed.prepare(self.net)

    def net_call(self, x: Tensor, *args, method: str = "forward", **kwargs) -> Tensor:
        """self.net(x, *args) (or self.net.<method>(...)) under the prior's speed settings, in x's dtype."""
        return self.speed(self.net, x, *args, method=method, **kwargs)

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 4 and not (x.dim() == 5 and self.frame_wise):
            video = " (a video prior: prior=flair_faces, or a frame-wise image prior such as prior=tv)" \
                if x.dim() == 5 else ""
            raise ShapeError(f"{type(self).__name__} expects a (B, C, H, W) batch but got shape "
                             f"{tuple(x.shape)}{video}.")
        if self.channels is not None and x.shape[1] != self.channels:
            raise ShapeError(
                f"the prior {self.describe()} was trained on {self.channels}-channel images but the data "
                f"has {x.shape[1]} channels; choose a matching prior or data ({channel_hint(self.channels)}).")

    def describe(self) -> str:
        return type(self).__name__

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """MMSE-style estimate of the clean image from x = clean + sigma * noise."""
        self.check_input(x)
        with self.stats.call(x):
            if x.dim() == 5:  # frame_wise: the frames of every clip as one image batch, each clip's σ per frame
                frames, bct = fold_frames(x)
                return unfold_frames(self._denoise(frames, as_sigma(sigma, x).repeat_interleave(bct[2])), bct)
            return self._denoise(x, as_sigma(sigma, x))

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """∇ log p_sigma(x) by Tweedie's formula: (D(x, σ) − x) / σ²."""
        s = as_sigma(sigma, x).view(-1, *[1] * (x.dim() - 1))
        return (self.denoise(x, sigma) - x) / s**2
