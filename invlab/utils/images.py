"""Image tiles, strips and grids as uint8 arrays, written as PNG with Pillow (no torchvision).

Every function accepts a torch tensor or a NumPy array holding one image `(C, H, W)` (or `(H, W)`) with
values in [0, 1]; torch is never imported here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def to_numpy(img: Any) -> np.ndarray:
    """A float array from a tensor (any device, complex → magnitude) or an array."""
    if hasattr(img, "detach"):
        img = img.detach().cpu()
        if img.is_complex():
            img = img.abs()
        img = img.float().numpy()
    arr = np.asarray(img)
    if np.iscomplexobj(arr):
        arr = np.abs(arr)
    return arr.astype(np.float32, copy=False)


def to_uint8(img: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a [0, 1] image (C, H, W) or (H, W); non-finite values show as 0.

    One channel is shown as gray, three as RGB, any other count by its first channel.
    """
    arr = to_numpy(img)
    if arr.ndim == 3:
        arr = arr.transpose(1, 2, 0) if arr.shape[0] == 3 else arr[0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def blank(height: int, width: int, value: int = 128) -> np.ndarray:
    """A uniform gray tile, shown where there is nothing image-shaped to show."""
    return np.full((height, width, 3), value, dtype=np.uint8)


def resize(tile: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize (pixels stay visible, e.g. for a low-resolution measurement)."""
    if tile.shape[:2] == (height, width):
        return tile
    from PIL import Image

    return np.asarray(Image.fromarray(tile).resize((width, height), Image.NEAREST))


def grid(rows: Sequence[Sequence[np.ndarray]], pad: int = 2, value: int = 255,
         min_cell: int = 96) -> np.ndarray:
    """Tile a list of rows of uint8 tiles into one array; cells are as large as the largest tile.

    Tiles smaller than `min_cell` pixels (MNIST's 28²) are enlarged by a whole factor, nearest
    neighbour, so the picture is legible and its pixels stay honest.
    """
    cells = [t for row in rows for t in row]
    if not cells:
        return blank(1, 1, value)
    factor = max(1, -(-min_cell // max(max(t.shape[:2]) for t in cells)))
    if factor > 1:
        rows = [[t.repeat(factor, 0).repeat(factor, 1) for t in row] for row in rows]
        cells = [t for row in rows for t in row]
    h = max(t.shape[0] for t in cells)
    w = max(t.shape[1] for t in cells)
    ncol = max(len(row) for row in rows)
    out = np.full((pad + len(rows) * (h + pad), pad + ncol * (w + pad), 3), value, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            top, left = pad + r * (h + pad), pad + c * (w + pad)
            out[top:top + tile.shape[0], left:left + tile.shape[1]] = tile
    return out


def save_png(arr: np.ndarray, path: str | Path) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path, format="PNG")  # explicit: callers write to temporary names


def load_png(path: str | Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))

