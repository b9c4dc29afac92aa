"""Temporal-consistency measures of videos (B, C, T, H, W) in [0, 1] (issue 15, FLAIR).

- `flicker(est, truth)`: mean |Δ_t est − Δ_t truth| over pixels and frame pairs, Δ_t v = v[t+1] − v[t]: how
  much the frame-to-frame change of a reconstruction departs from the true change (0 for the truth).
- `warp_error(v, motion)`: mean |v[t+1] − W_t v[t]| over the pixels that stay in view, W_t the known camera
  motion from frame t to t+1 (bilinear warp). The truth's own value is the floor (resampling and
  the border); a reconstruction above it changes in ways the motion does not explain.
- `fold_frames(v)` / `unfold_frames(x, bct)`: (B, C, T, H, W) <-> (B·T, C, H, W), the frames of every clip as
  one image batch (clip-major: frame t of clip b is row b·T + t), for per-frame operators, priors and metrics.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor



def fold_frames(v: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
    """(B, C, T, H, W) -> (B·T, C, H, W) and what `unfold_frames` needs."""
    b, c, t = v.shape[:3]
    return v.transpose(1, 2).reshape(b * t, c, *v.shape[3:]), (b, c, t)


def unfold_frames(x: Tensor, bct: tuple[int, int, int]) -> Tensor:
    """(B·T, C, H', W') -> (B, C, T, H', W'): the inverse of `fold_frames` (the frame size may have changed)."""
    b, c, t = bct
    return x.reshape(b, t, c, *x.shape[2:]).transpose(1, 2)

def flicker(est: Tensor, truth: Tensor) -> Tensor:
    """(B,) mean |Δ_t est − Δ_t truth|."""
    d = est.diff(dim=2) - truth.diff(dim=2)
    return d.abs().flatten(1).mean(1)


def step_maps(motion: Tensor) -> Tensor:
    """(B, T−1, 2, 3): for each t the affine map Φ_t with frame_{t+1}(p) = frame_t(Φ_t p), from the per-frame
    output→source maps θ_t = [M_t | b_t]: Φ_t = [M_t⁻¹ M_{t+1} | M_t⁻¹ (b_{t+1} − b_t)]."""
    m, b = motion[..., :2].double(), motion[..., 2:].double()
    inv = torch.linalg.inv(m[:, :-1])
    return torch.cat([inv @ m[:, 1:], inv @ (b[:, 1:] - b[:, :-1])], -1)


def warp_next(v: Tensor, motion: Tensor) -> tuple[Tensor, Tensor]:
    """(W_t v[t] for t < T−1, the in-view mask), both (B, C, T−1, H, W)."""
    B, C, T, H, W = v.shape
    phi = step_maps(motion).reshape(B * (T - 1), 2, 3).to(v.dtype)
    frames = v[:, :, :-1].transpose(1, 2).reshape(B * (T - 1), C, H, W)
    grid = F.affine_grid(phi, (B * (T - 1), C, H, W), align_corners=False)
    warped = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = (grid.abs() <= 1 - 1.0 / max(H, W)).all(-1, keepdim=True).permute(0, 3, 1, 2).to(v.dtype)
    unfold = lambda t: t.reshape(B, T - 1, t.shape[1], H, W).transpose(1, 2)  # noqa: E731
    return unfold(warped), unfold(inside).expand(B, C, T - 1, H, W)


def warp_error(v: Tensor, motion: Tensor) -> Tensor:
    """(B,) mean |v[t+1] − W_t v[t]| over in-view pixels and frame pairs."""
    warped, inside = warp_next(v, motion.to(v.device))
    err = (v[:, :, 1:] - warped).abs() * inside
    return err.flatten(1).sum(1) / inside.flatten(1).sum(1).clamp_min(1)
