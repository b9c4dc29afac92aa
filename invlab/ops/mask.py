"""Elementwise operators (identity for denoising, pixel masks for inpainting) and mask generators.

Elementwise operators are diagonal, so adjoint, prox and pseudo-inverse are pixelwise formulas.
Masks are 0/1 float tensors; the inpainting measurement keeps the image shape (zeros where dropped).
"""
from __future__ import annotations

import torch
from torch import Tensor

from invlab.ops.base import register
from invlab.ops.common import ImageLinearOperator, as_rho


# ---- mask generators --------------------------------------------------------------------------------
def box_mask(height: int, width: int, box_ratio: float = 0.5, margin_ratio: float = 0.0625,
             generator: torch.Generator | None = None) -> Tensor:
    """(H, W) mask, 0 inside one box of side box_ratio·(H, W) at a uniformly random position that keeps
    margin_ratio·(H, W) pixels from the border (DPS: 128×128 box, 16-pixel margin at 256×256)."""
    bh, bw = max(1, round(box_ratio * height)), max(1, round(box_ratio * width))
    mh, mw = round(margin_ratio * height), round(margin_ratio * width)
    top_range = max(1, height - bh - 2 * mh + 1)
    left_range = max(1, width - bw - 2 * mw + 1)
    top = mh + int(torch.randint(top_range, (1,), generator=generator))
    left = mw + int(torch.randint(left_range, (1,), generator=generator))
    mask = torch.ones(height, width)
    mask[top:top + bh, left:left + bw] = 0.0
    return mask


def random_pixel_mask(height: int, width: int, drop_ratio: float = 0.7,
                      generator: torch.Generator | None = None) -> Tensor:
    """(H, W) mask dropping each pixel independently with probability drop_ratio."""
    return (torch.rand(height, width, generator=generator) >= drop_ratio).float()


def block_mask(height: int, width: int, blocks: int = 16, drop_ratio: float = 0.5,
                generator: torch.Generator | None = None) -> Tensor:
    """(H, W) mask of a blocks×blocks grid of square cells, each dropped with probability drop_ratio
    (the distribution-shift paper's inpainting: 16 cells of 4 px at 64×64); edge cells absorb any remainder."""
    keep = (torch.rand(blocks, blocks, generator=generator) >= drop_ratio).float()
    rows = torch.div(torch.arange(height) * blocks, height, rounding_mode="floor")
    cols = torch.div(torch.arange(width) * blocks, width, rounding_mode="floor")
    return keep[rows][:, cols]


def rolled_cells_mask(cells: Tensor, shift: Tensor, height: int, width: int) -> Tensor:
    """(B, H, W) masks from (B, g, g) 0/1 cells, each cell a block of the image (edge cells absorb any
    remainder, as block_mask), the whole grid rolled circularly by shift (B, 2) = (rows, cols) pixels."""
    g = cells.shape[-1]
    rows = (torch.arange(height, device=cells.device)[None] - shift[:, :1]) % height * g // height   # (B, H)
    cols = (torch.arange(width, device=cells.device)[None] - shift[:, 1:]) % width * g // width      # (B, W)
    b = torch.arange(cells.shape[0], device=cells.device)[:, None, None]
    return cells[b, rows[:, :, None], cols[:, None, :]].float()


def rolled_block_mask(height: int, width: int, grid: int = 4, drop_ratio: float = 0.4,
                      generator: torch.Generator | None = None) -> Tensor:
    """(H, W) mask of MSM's FFHQ training operator (methods.md C, `gsure_random_box`): a grid×grid array of
    blocks with exactly ⌊grid²·drop_ratio⌋ of them dropped (6 of 16 at 0.4), rolled circularly by a random
    (rows, cols) shift below one block (32-pixel blocks at 128², 7 at 28²)."""
    n_drop = int(grid * grid * drop_ratio + 1e-9)
    order = torch.randperm(grid * grid, generator=generator)
    cells = torch.ones(grid * grid)
    cells[order[:n_drop]] = 0.0
    shift = torch.stack([torch.randint(max(1, height // grid), (1,), generator=generator),
                         torch.randint(max(1, width // grid), (1,), generator=generator)], dim=1)
    return rolled_cells_mask(cells.reshape(1, grid, grid), shift, height, width)[0]


def cartesian_column_mask(width: int, acceleration: float = 4.0, center_fraction: float = 0.08,
                          generator: torch.Generator | None = None) -> Tensor:
    """(W,) k-space column mask: a fully sampled centre (the ACS lines) plus random other columns.

    round(center_fraction·W) columns around W // 2 (the DC column of a centred FFT) are always kept; the
    others are kept with the probability that makes the expected total W / acceleration (fastMRI's
    RandomMaskFunc convention, so `acceleration` means what it says).
    """
    n_acs = max(1, round(center_fraction * width))
    start = width // 2 - n_acs // 2
    mask = torch.zeros(width)
    mask[start:start + n_acs] = 1.0
    p_keep = min(1.0, max(0.0, (width / acceleration - n_acs) / max(width - n_acs, 1)))
    extra = torch.rand(width, generator=generator) < p_keep
    return torch.maximum(mask, extra.float())


# ---- operators -------------------------------------------------------------------------------------
@register("identity")
class Identity(ImageLinearOperator):
    """A x = x: the denoising task."""

    def __init__(self, in_shape: tuple[int, ...], generator: torch.Generator | None = None):
        super().__init__(in_shape)
        self.out_shape = self.in_shape

    @classmethod
    def example(cls, in_shape=(1, 16, 16), generator=None) -> "Identity":
        return cls(in_shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.clone()

    def adjoint(self, y: Tensor) -> Tensor:
        self.check_measurement(y)
        return y.clone()

    def prox_l2(self, z, y, rho, iters=100, lr=None) -> Tensor:
        self.check_input(z)
        self.check_measurement(y)
        rho = as_rho(rho, z)
        return (y + rho * z) / (1 + rho)

    def pinv(self, y: Tensor, iters: int = 100, eps: float = 1e-4) -> Tensor:
        self.check_measurement(y)
        return y.clone()


@register("mask")
class Mask(ImageLinearOperator):
    """A x = m ⊙ x with a 0/1 mask buffer of shape (B or 1, C or 1, H, W): inpainting."""

    def __init__(self, in_shape: tuple[int, ...], mask: Tensor):
        super().__init__(in_shape)
        mask = torch.as_tensor(mask, dtype=torch.float32)
        while mask.dim() < 4:
            mask = mask.unsqueeze(0)
        self.register_buffer("mask", mask)
        self.out_shape = self.in_shape

    @classmethod
    def box(cls, in_shape, generator=None, box_ratio: float = 0.5, margin_ratio: float = 0.0625) -> "Mask":
        """One random box hole, the same on every channel."""
        return cls(in_shape, box_mask(*in_shape[-2:], box_ratio, margin_ratio, generator=generator))

    @classmethod
    def random(cls, in_shape, generator=None, drop_ratio: float = 0.7) -> "Mask":
        """Independent random pixels dropped, the same pixels on every channel."""
        return cls(in_shape, random_pixel_mask(*in_shape[-2:], drop_ratio, generator=generator))

    @classmethod
    def blocks(cls, in_shape, generator=None, blocks: int = 16, drop_ratio: float = 0.5) -> "Mask":
        """A grid of blocks×blocks cells, each dropped with probability drop_ratio, on every channel."""
        return cls(in_shape, block_mask(*in_shape[-2:], blocks, drop_ratio, generator=generator))

    @classmethod
    def rolled_blocks(cls, in_shape, generator=None, grid: int = 4, drop_ratio: float = 0.4) -> "Mask":
        """MSM's training masks (rolled_block_mask), the same pixels on every channel."""
        return cls(in_shape, rolled_block_mask(*in_shape[-2:], grid, drop_ratio, generator=generator))

    @classmethod
    def example(cls, in_shape=(1, 16, 16), generator=None) -> "Mask":
        return cls.random(in_shape, generator, drop_ratio=0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.mask.to(x.dtype) * x

    def adjoint(self, y: Tensor) -> Tensor:
        self.check_measurement(y)
        return self.mask.to(y.dtype) * y

    def prox_l2(self, z, y, rho, iters=100, lr=None) -> Tensor:
        self.check_input(z)
        self.check_measurement(y)
        m, rho = self.mask.to(z.dtype), as_rho(rho, z)
        return (m * y + rho * z) / (m * m + rho)

    def pinv(self, y: Tensor, iters: int = 100, eps: float = 1e-4) -> Tensor:
        """The exact pseudo-inverse y / m where m ≠ 0, else 0 (eps is unused: nothing is ill-conditioned)."""
        self.check_measurement(y)
        m = self.mask.to(y.dtype)
        return torch.where(m != 0, y / torch.where(m != 0, m, torch.ones_like(m)), torch.zeros_like(y))

    def fill(self, y: Tensor, value: float = 0.5) -> Tensor:
        """The measurement as an image with `value` in the dropped pixels: y + value·(1 − m)."""
        self.check_measurement(y)
        return y + value * (1 - self.mask.to(y.dtype))
