"""Training data made of measurements only (methods.md D, "aligning the OOD score with the InD score").

`MeasuredImages` measures every image of a dataset once with a seeded inpainting Task and keeps only
what a user of measurements has: ỹ = y + fill·(1 − M) (the measured pixels, `fill` elsewhere) and the
mask M. Items are {"x": ỹ, "mask": M, "index"}; DenoiserModule then trains with the masked loss
‖M ⊙ (D(ỹ + σn, σ) − ỹ)‖², so the clean images never reach the loss.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from invlab.errors import ConfigError
from invlab.ops.task import measured_images


class MeasuredImages(Dataset):
    def __init__(self, images: Dataset, task, seed: int = 0, fill: float = 0.5):
        if len(images) == 0:
            raise ConfigError("the training dataset is empty (check data.limit).")
        x = torch.stack([torch.as_tensor(images[i]["x"], dtype=torch.float32) for i in range(len(images))])
        self.y, self.mask = measured_images(task, x, seed=seed, fill=fill, with_masks=True)
        if self.mask.shape[1] == 1 and x.shape[1] > 1:
            self.mask = self.mask.expand(-1, x.shape[1], -1, -1).contiguous()

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i: int) -> dict:
        return {"x": self.y[i], "mask": self.mask[i], "index": int(i)}
