"""What the reconstruction engine does differently for videos (B, C, T, H, W) instead of images (issue 15):
per-clip metrics and a frame strip.

- `psnr`: over all pixels of the clip (clamped to [0, 1]); `ssim`: the mean over frames of the image SSIM
  (engine/metrics.py's convention, frame by frame); the same for the operator's baseline as `*_input`.
- temporal consistency (invlab.utils.video): `flicker` = mean |Δ_t x̂ − Δ_t x|; `warp_err` = mean
  |x̂[t+1] − W_t x̂[t]| with the dataset's known camera motion W_t (face_clips), and `warp_err_truth`, the
  truth's own value (the floor); NaN where the dataset has no motion (video_folder). Also `*_input`.
- the strip: one row of frames each for truth | measurement (the baseline clip) | reconstruction.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from invlab.engine.metrics import image_scores
from invlab.utils.video import flicker, fold_frames, warp_error

VIDEO_KEYS = ("flicker", "flicker_input", "warp_err", "warp_err_input", "warp_err_truth")


def is_video(x: Tensor) -> bool:
    """A batch of clips (B, C, T, H, W) rather than images (B, C, H, W)."""
    return x.dim() == 5


def frames_of(v: Tensor) -> Tensor:
    """(B, C, T, H, W) -> (B·T, C, H, W)."""
    return fold_frames(v)[0]


def clip_scores(est: Tensor, x: Tensor, motion: Tensor | None) -> dict[str, Tensor]:
    """(B,) psnr, ssim, flicker, warp_err of `est` (clamped to [0, 1]) against the clips x."""
    e = est.clamp(0, 1)
    B, T = x.shape[0], x.shape[2]
    _, ssim = image_scores(frames_of(e), frames_of(x))
    mse = (e - x).pow(2).flatten(1).mean(1)
    out = {"psnr": 10 * torch.log10(1.0 / mse.clamp_min(1e-20)), "ssim": ssim.reshape(B, T).mean(1),
           "flicker": flicker(e, x)}
    out["warp_err"] = warp_error(e, motion) if motion is not None else torch.full((B,), math.nan)
    return out


def video_rows(x: Tensor, xhat: Tensor, baseline: Tensor | None, motion: Tensor | None, means=None) -> list[dict]:
    """Per-clip rows (psnr, ssim, *_input, VIDEO_KEYS, status); `means` (the engine's MeanMetrics) gets
    psnr, ssim and their inputs of the finite clips."""
    n = x.shape[0]
    finite = torch.isfinite(xhat).flatten(1).all(1)
    rows = [{"psnr": math.nan, "ssim": math.nan, "psnr_input": math.nan, "ssim_input": math.nan,
             **{k: math.nan for k in VIDEO_KEYS}, "status": "ok" if bool(f) else "diverged"} for f in finite]
    if motion is not None:
        for j, v in enumerate(warp_error(x, motion).tolist()):
            rows[j]["warp_err_truth"] = v
    for suffix, est in (("", xhat), ("_input", baseline)):
        if est is None:
            continue
        ok = torch.isfinite(est).flatten(1).all(1)
        if not bool(ok.any()):
            continue
        scores = clip_scores(est[ok], x[ok], None if motion is None else motion[ok])
        where = ok.nonzero().flatten().tolist()
        for key, vals in scores.items():
            for j, v in zip(where, vals.tolist()):
                rows[j][key + suffix] = v
        if means is not None:
            counted = finite[ok]
            for key in ("psnr", "ssim"):
                if bool(counted.any()):
                    means[key + suffix].update(scores[key][counted])
    return rows


def video_strip(x: Tensor, shown: Tensor | None, xhat: Tensor) -> np.ndarray:
    """Truth | measurement | reconstruction of one clip (C, T, H, W), one row of frames each."""
    from invlab.utils.images import blank, grid, to_uint8

    T, H, W = x.shape[1:]
    rows = []
    for v in (x, shown, xhat):
        rows.append([blank(H, W) for _ in range(T)] if v is None else [to_uint8(v[:, t]) for t in range(T)])
    return grid(rows, min_cell=64)
