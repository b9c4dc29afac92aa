"""Random patches for training priors: an endless-looking dataset of `length` seeded random crops."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from invlab.data import sources


class RandomPatches(Dataset):
    """Item i is a random crop (with a random flip/rotation) drawn with a generator seeded by
    (seed, epoch, i): reproducible, and different every epoch after `set_epoch`."""

    def __init__(self, images: Sequence[np.ndarray], patch_size: int = 40, length: int = 6400,
                 seed: int = 0, augment: bool = True):
        self.images = [torch.as_tensor(im if im.ndim == 3 else im[None]) for im in images]
        small = [tuple(im.shape) for im in self.images if min(im.shape[-2:]) < patch_size]
        if small:
            from invlab.errors import ConfigError

            raise ConfigError(f"patch_size={patch_size} is larger than images of shape {small}.")
        # sample images in proportion to their area so big photos are not under-used
        areas = np.array([im.shape[-1] * im.shape[-2] for im in self.images], dtype=np.float64)
        self.weights = torch.as_tensor(areas / areas.sum())
        self.patch_size, self.length, self.seed, self.augment = patch_size, length, seed, augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(hash((self.seed, self.epoch, i)) & 0x7FFFFFFF)
        img = self.images[int(torch.multinomial(self.weights, 1, generator=g))]
        h, w = img.shape[-2:]
        p = self.patch_size
        top = int(torch.randint(0, h - p + 1, (1,), generator=g))
        left = int(torch.randint(0, w - p + 1, (1,), generator=g))
        x = img[:, top:top + p, left:left + p]
        if self.augment:
            x = torch.rot90(x, int(torch.randint(0, 4, (1,), generator=g)), dims=(-2, -1))
            if bool(torch.randint(0, 2, (1,), generator=g)):
                x = x.flip(-1)
        return {"x": x.contiguous().float(), "index": int(i)}


def _multiscale(images: Sequence[np.ndarray], patch_size: int, scales: Sequence[float]) -> list[np.ndarray]:
    """Each image at each scale (never smaller than one patch), channels first."""
    out = []
    for img in images:
        for s in scales:
            hw = (max(patch_size, round(img.shape[0] * s)), max(patch_size, round(img.shape[1] * s)))
            im = sources.resize(img, hw)
            out.append(np.ascontiguousarray(im.transpose(2, 0, 1)) if im.ndim == 3 else im)
    return out


def gray_train(patch_size: int = 40, length: int = 6400, seed: int = 0, scales: Sequence[float] = (1.0, 0.5),
               augment: bool = True) -> RandomPatches:
    """Patches from scikit-image's natural photographs other than the test four, at several scales."""
    images = _multiscale([sources.skimage_gray(n) for n in sources.GRAY_TRAIN], patch_size, scales)
    return RandomPatches(images, patch_size, length, seed, augment)


def color_train(patch_size: int = 40, length: int = 6400, seed: int = 0, scales: Sequence[float] = (1.0, 0.5),
                augment: bool = True) -> RandomPatches:
    """(3, p, p) patches of the bundled colour images other than the color_test four, at several scales."""
    images = _multiscale([sources.color_image(n) for n in sources.COLOR_TRAIN], patch_size, scales)
    return RandomPatches(images, patch_size, length, seed, augment)
