"""Baseline OOD detectors from the same denoiser, one feature per noise level σ, aggregated like
EigenScore (standardised on in-distribution training images, summed over σ; see `Detector`).

- ScoreNorm: ‖s(x, σ)‖ = ‖(D(x, σ) − x)/σ²‖ at the clean image (multiscale score norms, as in MSMA),
  or at x + σn with `noised: true` (the paper's ‖ε_θ(x_t, t)‖ baseline, up to a factor σ per level).
- DenoisingError: ‖D(x + σn, σ) − x‖², the denoising MSE (summed over pixels).
- PosteriorTrace: tr Cov[x | x_σ] = σ² tr J by Hutchinson, E[zᵀ J z] with Rademacher z (exact when J
  is diagonal), the total posterior variance (EigenScore's trace argument).
- JacobianNorm: ‖Cov[x | x_σ]‖_F = σ² ‖J‖_F with ‖J‖_F² = E‖J z‖² (Rademacher z).
The Jacobian-vector products are the central differences of `jacobian.jvp`; no autograd.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from invlab.analysis.detector import F64, Detector
from invlab.analysis.jacobian import denoise, jvp
from invlab.errors import ConfigError


class ScoreNorm(Detector):
    name = "score_norm"
    per_sigma = ("score_norm",)

    def __init__(self, sigmas: Sequence[float], noised: bool = False, reps: int = 1, standardize: bool = True,
                 seed: int = 0, chunk: int | None = 512):
        super().__init__(sigmas, reps if noised else 1, standardize, seed, chunk)
        self.noised = bool(noised)

    def sigma_features(self, prior, x, sigma_index, keys):
        sigma = self.sigmas[sigma_index]
        xt = self.noisy(x, sigma, self.generators(sigma_index, keys)) if self.noised else x
        s = torch.full((xt.shape[0],), sigma, dtype=x.dtype, device=x.device)
        score = (denoise(prior, xt, s, self.chunk) - xt).to(F64) / sigma**2
        return self.per_image(score.flatten(1).norm(dim=1))


class DenoisingError(Detector):
    name = "denoising_error"
    per_sigma = ("mse",)

    def __init__(self, sigmas: Sequence[float], reps: int = 4, standardize: bool = True, seed: int = 0,
                 chunk: int | None = 512):
        super().__init__(sigmas, reps, standardize, seed, chunk)

    def sigma_features(self, prior, x, sigma_index, keys):
        sigma = self.sigmas[sigma_index]
        xt = self.noisy(x, sigma, self.generators(sigma_index, keys))
        s = torch.full((xt.shape[0],), sigma, dtype=x.dtype, device=x.device)
        err = denoise(prior, xt, s, self.chunk).to(F64) - x.repeat_interleave(self.reps, 0).to(F64)
        return self.per_image(err.flatten(1).pow(2).sum(1))


class _JacobianProbe(Detector):
    """Shared: `probes` Rademacher vectors z per (image, draw) at x + σn, and J z by central differences."""

    def __init__(self, sigmas: Sequence[float], probes: int = 8, reps: int = 2, fd_step: float | None = None,
                 standardize: bool = True, seed: int = 0, chunk: int | None = 512):
        super().__init__(sigmas, reps, standardize, seed, chunk)
        if int(probes) < 1:
            raise ConfigError(f"detector.probes must be at least 1, got {probes}.")
        self.probes, self.fd_step = int(probes), None if fd_step is None else float(fd_step)  # ε/σ; None: auto
        if self.fd_step is not None and not self.fd_step > 0:
            raise ConfigError(f"detector.fd_step (ε/σ) must be positive or null (automatic), got {fd_step}.")

    def probe(self, prior, x, sigma_index, keys) -> tuple[Tensor, Tensor, float]:
        """(Z, JZ, σ): Z (B·reps, d, probes) Rademacher, JZ its Jacobian products at x + σn."""
        sigma = self.sigmas[sigma_index]
        gens = self.generators(sigma_index, keys)
        xt = self.noisy(x, sigma, gens)                       # the noise first, then the probes
        d = x[0].numel()
        Z = torch.stack([torch.randint(0, 2, (d, self.probes), generator=g).to(F64) * 2 - 1
                         for row in gens for g in row])
        s = torch.full((xt.shape[0],), sigma, dtype=F64)
        return Z, jvp(prior, xt, s, Z, self.fd_step, self.chunk).cpu(), sigma


class PosteriorTrace(_JacobianProbe):
    name = "posterior_trace"
    per_sigma = ("trace",)

    def sigma_features(self, prior, x, sigma_index, keys):
        Z, JZ, sigma = self.probe(prior, x, sigma_index, keys)
        return self.per_image(sigma**2 * (Z * JZ).sum(1).mean(1))


class JacobianNorm(_JacobianProbe):
    name = "jacobian_norm"
    per_sigma = ("frobenius",)

    def sigma_features(self, prior, x, sigma_index, keys):
        _, JZ, sigma = self.probe(prior, x, sigma_index, keys)
        return self.per_image(sigma**2 * JZ.pow(2).sum(1).mean(1).sqrt())
