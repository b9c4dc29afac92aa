"""The checks behind `status=suspect`: a finite reconstruction that the measurement or the image range
says is broken (an untrained prior's saturated noise, a solver stuck far from the data), so that it is
never reported as plain `ok`.

Per sample, with m measurements and r = y − A(x̂):

- `residual_ratio` = RMS(r) / allowed, where allowed = FACTOR · sqrt(v + (FLOOR · RMS(y))²) and v is the
  noise model's variance per measurement: σ_y² for Gaussian noise (2σ_y² for complex measurements, σ_y² in
  each part), mean(y)/peak + σ_y² for Poisson. At the truth RMS(r)² ≈ v (chi-square with m degrees of
  freedom, so RMS(r) ≈ σ_y·(1 ± 1/sqrt(2m)): 1 ± 0.025 for a 28×28 image); FACTOR = 3 (9× the noise
  energy, hundreds of standard deviations out) leaves room for a regularised solution that fits the data
  less tightly than the truth, and the FLOOR term (5 % of the measurement's RMS) for model error where
  there is no noise (σ_y = 0). What the operator cannot see (a blur's lost high frequencies, inpainted
  pixels) this check cannot judge either. For the 1-bit quantiser (`dither`) r is no residual: the ratio is the
  negative log-likelihood per measurement over log 2, the NLL of the constant mid-grey image (logits 0),
  so above 1 means x̂ explains the bits worse than knowing nothing.
- `saturation` = the fraction of pixels at the rarer end of [0, 1] (x̂ ≤ 0.002 and x̂ ≥ 0.998 counted
  apart; the smaller share). Saturated noise puts about half its pixels at each end; real images are
  rarely two-tone: over the bundled sets the largest share is 0.13 (phantoms; MNIST 0.09: its 80–92 %
  black background is one end only).

A sample is suspect when residual_ratio > 1 or saturation ≥ SATURATED. Its metrics are kept (and counted in
the means): suspect says "look at this one", not "drop it".
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

FACTOR = 3.0
FLOOR = 0.05
SATURATED = 0.25
EDGE = 0.002


def _rms(t: Tensor) -> Tensor:
    t = t.flatten(1)
    return (t.abs() ** 2 if t.is_complex() else t ** 2).mean(1).sqrt()


@torch.no_grad()
def residual_ratio(A, y: Tensor, xhat: Tensor) -> Tensor:
    """(B,) float64: the data misfit of x̂ relative to what the noise model allows (see the module doc)."""
    noise = getattr(A, "noise", None)
    kind = getattr(noise, "name", "gaussian")
    m = y[0].numel()
    if kind == "dither":
        return (A.data_fidelity(xhat, y).double() / (m * math.log(2))).reshape(-1)
    wide = torch.complex128 if y.is_complex() else torch.float64  # .double() would drop an imaginary part
    r = (y - A(xhat)).to(wide)
    yd = y.to(wide)
    if kind == "poisson":
        var = yd.real.flatten(1).clamp_min(0).mean(1) / float(noise.peak) + float(getattr(noise, "read_sigma", 0.0)) ** 2
    else:
        sigma = float(getattr(noise, "sigma", 0.0) or 0.0)
        var = torch.full((y.shape[0],), sigma ** 2 * (2 if y.is_complex() else 1), dtype=torch.float64,
                         device=y.device)
    allowed = FACTOR * (var + (FLOOR * _rms(yd)) ** 2).sqrt()
    return _rms(r) / allowed.clamp_min(1e-30)


@torch.no_grad()
def saturation(xhat: Tensor) -> Tensor:
    """(B,): the share of pixels at the rarer end of [0, 1] (see the module doc)."""
    flat = xhat.detach().flatten(1)
    low = (flat <= EDGE).double().mean(1)
    high = (flat >= 1 - EDGE).double().mean(1)
    return torch.minimum(low, high)


def check_rows(A, y: Tensor, xhat: Tensor, finite: Tensor) -> list[dict]:
    """Per sample {"residual_ratio", "saturation"}; NaN for samples that are not finite (diverged). The
    operator sees the whole batch (a per-sample stack of operators cannot take a subset), the diverged
    samples replaced by mid-grey: every sample's values depend on that sample only."""
    n = xhat.shape[0]
    if xhat.is_complex():
        return [{"residual_ratio": math.nan, "saturation": math.nan} for _ in range(n)]
    keep = finite.view(-1, *[1] * (xhat.dim() - 1))
    safe = torch.where(keep, xhat.detach(), torch.full_like(xhat, 0.5))
    ratio, sat = residual_ratio(A, y, safe).cpu(), saturation(safe).cpu()
    return [{"residual_ratio": float(r) if f else math.nan, "saturation": float(s) if f else math.nan}
            for r, s, f in zip(ratio.tolist(), sat.tolist(), finite.cpu().tolist())]


def is_suspect(row: dict) -> bool:
    r, s = row.get("residual_ratio", math.nan), row.get("saturation", math.nan)
    return (math.isfinite(r) and r > 1.0) or (math.isfinite(s) and s >= SATURATED)
