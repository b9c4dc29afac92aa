"""What the reconstruction engine does differently for 1-D spectra (B, C, L) instead of images (B, C, H, W):
the per-sample metrics (invlab.utils.spectra: snr, snr_gain, psnr, peak errors; no SSIM) and a plotted
strip (truth | measurement | reconstruction as curves on a shared vertical scale) instead of image tiles.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from invlab.utils.spectra import spectrum_scores

SPECTRUM_KEYS = ("snr", "snr_input", "snr_gain", "peak_pos_err", "peak_height_err")


def is_spectrum(x: Tensor) -> bool:
    """A batch of spectra (B, C, L) rather than images (B, C, H, W)."""
    return x.dim() == 3


def spectrum_rows(x: Tensor, xhat: Tensor, baseline: Tensor | None, means=None) -> list[dict]:
    """Per-sample rows (psnr, psnr_input, the SPECTRUM_KEYS, ssim NaN, status); `means` (the engine's
    MeanMetrics by key) gets psnr and psnr_input of the finite samples."""
    n = x.shape[0]
    finite = torch.isfinite(xhat).flatten(1).all(1)
    rows = [{"psnr": math.nan, "ssim": math.nan, "psnr_input": math.nan, "ssim_input": math.nan,
             **{k: math.nan for k in SPECTRUM_KEYS}, "status": "ok" if bool(f) else "diverged"} for f in finite]
    for suffix, est in (("", xhat), ("_input", baseline)):
        if est is None:
            continue
        ok = torch.isfinite(est).flatten(1).all(1) & (finite if suffix == "" else torch.ones_like(finite))
        where = ok.nonzero().flatten().tolist()
        if not where:
            continue
        scores = spectrum_scores(est[ok], x[ok])
        keys = ("snr", "psnr", "peak_pos_err", "peak_height_err") if suffix == "" else ("snr", "psnr")
        for key in keys:
            for j, v in zip(where, scores[key].tolist()):
                rows[j][key + suffix] = v
        if means is not None:
            means["psnr" + suffix].update(scores["psnr"])
    for r in rows:
        r["snr_gain"] = r["snr"] - r["snr_input"]
    return rows


def plot_curve(values: np.ndarray, lo: float, hi: float, height: int = 96, color=(20, 60, 200)) -> np.ndarray:
    """A uint8 RGB tile (height, L) with the curve drawn as connected vertical runs."""
    tile = np.full((height, values.shape[0], 3), 255, dtype=np.uint8)
    rows = np.clip(((hi - values) / max(hi - lo, 1e-12) * (height - 1)).round().astype(int), 0, height - 1)
    for i in range(values.shape[0]):
        a = rows[i]
        b = rows[i + 1] if i + 1 < values.shape[0] else a
        tile[min(a, b):max(a, b) + 1, i] = color
    return tile


def spectrum_strip(x: Tensor, y: Tensor, xhat: Tensor, height: int = 96) -> np.ndarray:
    """Truth | measurement | reconstruction of one spectrum (C, L), first channel, stacked vertically."""
    from invlab.utils.images import grid

    curves = [t.detach().float().cpu().reshape(t.shape[0], -1)[0].numpy() for t in (x, y, xhat)]
    finite = np.concatenate([c[np.isfinite(c)] for c in curves])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    tiles = [plot_curve(np.nan_to_num(c, nan=lo), lo, hi, height) for c in curves]
    return grid([[t] for t in tiles], min_cell=1)
