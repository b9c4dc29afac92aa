"""Quality measures of denoised spectra (B, C, L) against the clean ones; one definition for the engine
(results.csv), the training cards and the TVCondNet table.

- snr:  10·log10(‖x‖² / ‖x̂ − x‖²) in dB, per spectrum (SNR improvement = snr(x̂) − snr(y)).
- psnr: 10·log10(max|x|² / MSE) in dB (spectra are scaled to maximum 1, so this is 1/MSE as for images).
- peak errors: the lines of the clean spectrum are its local maxima with prominence ≥ `prominence`·max
  (scipy.signal.find_peaks); each is matched to the estimate's maximum within ±`window` points;
  `peak_pos_err` is the mean |shift| in points, `peak_height_err` the mean |height difference| relative
  to the clean line's height. NaN for a spectrum without lines.
No clamping: spectra may be negative (dispersion, baseline).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def snr_db(est: Tensor, truth: Tensor) -> Tensor:
    err = (est.double() - truth.double()).flatten(1).pow(2).sum(1)
    return (10 * torch.log10(truth.double().flatten(1).pow(2).sum(1) / err.clamp_min(1e-30))).float()


def psnr_db(est: Tensor, truth: Tensor) -> Tensor:
    mse = (est.double() - truth.double()).flatten(1).pow(2).mean(1)
    peak = truth.double().flatten(1).abs().amax(1)
    return (10 * torch.log10(peak.pow(2) / mse.clamp_min(1e-30))).float()


def peak_errors(est: Tensor, truth: Tensor, prominence: float = 0.1, window: int = 3) -> tuple[Tensor, Tensor]:
    """(peak_pos_err, peak_height_err), each (B,), over the first channel."""
    from scipy.signal import find_peaks

    e = est.detach().double().cpu().numpy()[:, 0]
    t = truth.detach().double().cpu().numpy()[:, 0]
    pos, height = [], []
    for eb, tb in zip(e, t):
        peaks, _ = find_peaks(tb, prominence=prominence * np.abs(tb).max())
        if len(peaks) == 0:
            pos.append(math.nan)
            height.append(math.nan)
            continue
        dp, dh = [], []
        for p in peaks:
            lo, hi = max(0, p - window), min(len(tb), p + window + 1)
            q = lo + int(np.argmax(eb[lo:hi]))
            dp.append(abs(q - p))
            dh.append(abs(eb[q] - tb[p]) / abs(tb[p]))
        pos.append(float(np.mean(dp)))
        height.append(float(np.mean(dh)))
    return torch.tensor(pos), torch.tensor(height)


def spectrum_scores(est: Tensor, truth: Tensor) -> dict[str, Tensor]:
    """All of the above, (B,) each: snr, psnr, peak_pos_err, peak_height_err."""
    pos, height = peak_errors(est, truth)
    return {"snr": snr_db(est, truth), "psnr": psnr_db(est, truth), "peak_pos_err": pos, "peak_height_err": height}
