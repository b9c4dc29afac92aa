"""Per-image PSNR and SSIM: the project's one definition of both (results.csv, summaries, tables).

PSNR: 10·log10(1 / MSE) over all pixels and channels, data range 1 (images in [0, 1]).

SSIM (Wang et al. 2004, computed by torchmetrics==1.9.0 — pinned, because its border handling changed
between releases):
- window: Gaussian, σ_w = 1.5 px, 11×11 (torchmetrics' size rule 2·int(3.5σ_w + 0.5) + 1, normalised to
  sum 1). On an image smaller than 11 px the window shrinks to the largest odd k ≤ min(H, W) with
  σ_w = 1.5·k/11, the same shape scaled down (8×8 digits: 7×7, σ_w ≈ 0.95; the size rule gives k again).
  torchmetrics derives the Gaussian window's size from σ_w alone and ignores `kernel_size`, so the shrink
  must go through σ_w.
- border: each image is mirror-padded by (k−1)/2 (torch's "reflect": d c b | a b c d, the edge pixel not
  repeated) and the SSIM map is averaged over all H×W pixels, border included. (scikit-image and Wang's
  MATLAB code instead average only the (H−k+1)×(W−k+1) positions where the window fits, so on 28×28
  digits, whose borders are flat background, this convention reads higher.)
- constants: C1 = (0.01·L)², C2 = (0.03·L)² with data range L = 1; local (co)variances are the
  window-weighted population ones (no N/(N−1)), the variances clamped at 0.
- colour: the map is computed per channel and averaged over channels and pixels (= the mean of the
  per-channel SSIMs).
- computed in float64 (float32 loses ~1e-4 in flat regions where the variances are below C2).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

SSIM_SIGMA, SSIM_SIZE, SSIM_K1, SSIM_K2 = 1.5, 11, 0.01, 0.03


def ssim_window(height: int, width: int) -> tuple[int, float]:
    """(k, σ_w): the odd window size and Gaussian σ used for an H×W image (11, 1.5 unless it is smaller)."""
    k = min(SSIM_SIZE, int(height), int(width))
    k = k if k % 2 else k - 1
    if k < 1:
        raise ValueError(f"SSIM needs an image of at least 1×1 pixels, got {height}×{width}.")
    sigma = SSIM_SIGMA * k / SSIM_SIZE
    assert 2 * int(3.5 * sigma + 0.5) + 1 == k   # torchmetrics' size rule gives back k (it ignores kernel_size)
    return k, sigma


def ssim(est: Tensor, truth: Tensor) -> Tensor:
    """Per-image SSIM (B,) of (B, C, H, W) images in [0, 1], by the convention in the module docstring."""
    k, sigma = ssim_window(*truth.shape[-2:])
    out = structural_similarity_index_measure(
        est.to(torch.float64), truth.to(torch.float64), gaussian_kernel=True, sigma=sigma, kernel_size=k,
        data_range=1.0, k1=SSIM_K1, k2=SSIM_K2, reduction="none")
    return out.reshape(-1).to(truth.dtype)


def psnr(est: Tensor, truth: Tensor) -> Tensor:
    """Per-image PSNR (B,) of (B, C, H, W) images in [0, 1] (data range 1; `est` is not clamped here)."""
    return peak_signal_noise_ratio(est, truth, data_range=1.0, reduction="none", dim=(1, 2, 3)).reshape(-1)


def image_scores(est: Tensor, truth: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image PSNR and SSIM, (B,) each, of `est` clamped to [0, 1] against `truth` (data range 1)."""
    e = est.clamp(0, 1)
    return psnr(e, truth), ssim(e, truth)
