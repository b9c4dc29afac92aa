"""Image sets for OOD pairs, built from the datasets of `invlab.data` by config (`conf/pair/*.yaml`).

`pick` keeps n images spread evenly over a dataset (mnist_train is sorted by class, so its first N are
all zeros) or a contiguous range; `concat` joins several datasets of equal image shape (a mixed
far-OOD set). Items are {"x": (C, H, W), "index": position in this set}.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset

from invlab.errors import ConfigError


class Selection(Dataset):
    """Items `positions` of the datasets `parts` (concatenated), re-indexed 0..n−1."""

    def __init__(self, parts: Sequence[Dataset], positions: Sequence[int] | None = None):
        self.parts = list(parts)
        self.offsets = [0]
        for p in self.parts:
            self.offsets.append(self.offsets[-1] + len(p))
        total = self.offsets[-1]
        self.positions = list(range(total)) if positions is None else [int(i) for i in positions]
        if any(i < 0 or i >= total for i in self.positions):
            raise ConfigError(f"a selection asks for images outside 0..{total - 1}.")

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict:
        pos = self.positions[i]
        part = max(j for j in range(len(self.parts)) if self.offsets[j] <= pos)
        x = self.parts[part][pos - self.offsets[part]]["x"]
        return {"x": torch.as_tensor(x, dtype=torch.float32), "index": int(i)}


def pick(dataset: Dataset, n: int | None = None, start: int = 0, stop: int | None = None,
         spread: bool = True) -> Selection:
    """n images of dataset[start:stop]: evenly spaced over the range (spread) or the first n."""
    stop = len(dataset) if stop is None else min(int(stop), len(dataset))
    start = int(start)
    if not 0 <= start < stop:
        raise ConfigError(f"cannot pick images {start}..{stop} from a set of {len(dataset)}.")
    avail = stop - start
    n = avail if n is None else int(n)
    if n < 1:
        raise ConfigError(f"a pair's set size must be positive, got {n}.")
    n = min(n, avail)
    if spread:
        positions = [start + (i * avail) // n for i in range(n)]
    else:
        positions = list(range(start, start + n))
    return Selection([dataset], positions)


def concat(parts: Sequence[Dataset], n: int | None = None) -> Selection:
    """The datasets one after another (images must share a shape); n > 0 spreads n picks over all."""
    sel = Selection(parts)
    shapes = {tuple(torch.as_tensor(p[0]["x"]).shape) for p in parts if len(p)}
    if len(shapes) > 1:
        raise ConfigError(f"the sets joined by concat have different image shapes {sorted(shapes)}.")
    return sel if n is None else pick(sel, n)
