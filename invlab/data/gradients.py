"""Image gradients as a dataset: the training data of an analysis-PnP (APnP, methods.md B) prior.

`Gradients(dataset)` maps each item's image x (C, H, W) to its finite differences D x (2C, H, W):
horizontal then vertical per image channel, periodic boundaries (`invlab.ops.gradient.grad`, the D the
APnP solver applies). Values lie in [−1, 1] and cluster at 0; a denoiser trained on them with AWGN is a
"learned TV" proximal map.

With `valid=True` the last row and column are dropped: on a random crop, the periodic difference across
the crop's edges pairs two unrelated pixels, a jump no image has. The training crops are therefore one
pixel larger than the gradient patches (41 → 40×40). Whole test images keep the periodic D the solver uses.
"""
from __future__ import annotations

from typing import Sequence

from torch.utils.data import Dataset

from invlab.data.datasets import gray_test
from invlab.data.patches import gray_train
from invlab.ops.gradient import grad


class Gradients(Dataset):
    """Items {"x": D x (2C, H, W) (or (2C, H−1, W−1) with valid), "index": ...} of a dataset of images."""

    value_range = (-1.0, 1.0)  # differences of [0, 1] images (not the [0, 1] of every image dataset)

    def __init__(self, dataset: Dataset, valid: bool = False):
        self.dataset, self.valid = dataset, bool(valid)
        if hasattr(dataset, "set_epoch"):  # random-patch sources still draw fresh crops every epoch
            self.set_epoch = dataset.set_epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.dataset[i])
        z = grad(item["x"][None])[0]
        item["x"] = z[..., :-1, :-1].contiguous() if self.valid else z
        return item


def gray_train_grad(patch_size: int = 40, length: int = 6400, seed: int = 0,
                    scales: Sequence[float] = (1.0, 0.5), augment: bool = True) -> Gradients:
    """Gradients (2 × patch_size²) of random gray_train crops of size patch_size + 1, wrap-free."""
    return Gradients(gray_train(patch_size + 1, length, seed, scales, augment), valid=True)


def gray_test_grad(size: int = 256, limit: int | None = None) -> Gradients:
    """Periodic gradients of the gray_test images (validation of a gradient denoiser only)."""
    return Gradients(gray_test(size, limit))

