"""Measurement noise models: y = noise(A(x), generator).

Noise is drawn on the CPU from the given generator and then moved to the measurement's device, so a
measurement depends only on the seed, never on the device or on how samples were batched. Every model
exposes `.sigma`, a Gaussian-equivalent level in [0,1] image units that solvers read as `A.sigma_y`.
"""
from __future__ import annotations

import inspect
import math

import torch
from torch import Tensor

from invlab.errors import ConfigError


def _randn_like(t: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like t; complex t gets N(0,1) in both the real and imaginary part."""
    if t.is_complex():
        pair = torch.randn(*t.shape, 2, generator=generator, dtype=t.real.dtype)
        return torch.view_as_complex(pair).to(t.device)
    return torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device)


class Noise:
    """Base class. `sigma`: Gaussian-equivalent noise level (0 when the model has none)."""

    name = "none"
    sigma = 0.0

    def __call__(self, clean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return clean.clone()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma:g})"


class Gaussian(Noise):
    """y = A(x) + σ n, n ~ N(0, I). For complex measurements the real and imaginary parts each get
    variance σ², so ½‖A(x) − y‖²/σ² is the exact negative log-likelihood in both cases."""

    name = "gaussian"

    def __init__(self, sigma: float = 0.0):
        if sigma < 0:
            raise ConfigError(f"sigma_y must be nonnegative, got {sigma}")
        self.sigma = float(sigma)

    def __call__(self, clean, generator=None):
        return clean + self.sigma * _randn_like(clean, generator) if self.sigma > 0 else clean.clone()


class Poisson(Noise):
    """Shot noise with optional Gaussian read noise: y = Poisson(peak · A(x)) / peak + σ n.

    `peak` is the expected photon count at intensity 1 (smaller peak = noisier). The variance at
    intensity v is v/peak + σ²; `.sigma` reports the Gaussian-equivalent level at mid-grey,
    sqrt(0.5/peak + σ²). Needs real, nonnegative measurements (round-off negatives are clipped).
    """

    name = "poisson"

    def __init__(self, peak: float = 100.0, sigma: float = 0.0):
        if peak <= 0 or sigma < 0:
            raise ConfigError(f"Poisson noise needs peak > 0 and sigma_y >= 0, got peak={peak}, sigma_y={sigma}")
        self.peak = float(peak)
        self.read_sigma = float(sigma)
        self.sigma = math.sqrt(0.5 / self.peak + self.read_sigma**2)

    def __call__(self, clean, generator=None):
        if clean.is_complex():
            raise ConfigError("Poisson noise needs real, nonnegative measurements, but this operator "
                              "produces complex ones; use noise=gaussian.")
        scale = clean.detach().abs().amax().clamp_min(1e-12)
        if bool((clean < -1e-4 * scale).any()):
            raise ConfigError("Poisson noise needs nonnegative measurements, but this operator produces "
                              "negative values; use noise=gaussian.")
        rate = (clean.clamp_min(0) * self.peak).cpu()
        counts = torch.poisson(rate, generator=generator).to(clean.device, clean.dtype)
        y = counts / self.peak
        if self.read_sigma > 0:
            y = y + self.read_sigma * _randn_like(clean, generator)
        return y


class LogisticDither(Noise):
    """1-bit dithered quantisation of logits a = A(x): y = 2·1[u < sigmoid(a)] − 1, u ~ U[0,1).

    Equivalently y = sign(a + ℓ) with logistic ℓ; the likelihood is p(y | a) = sigmoid(y·a). Used by the
    `quantized` task (DPnP); it has no additive noise, so sigma = 0.
    """

    name = "dither"

    def __init__(self, sigma: float = 0.0):
        if sigma:
            raise ConfigError(f"dither noise is the 1-bit quantiser itself; sigma_y must be 0, got {sigma}")

    def __call__(self, clean, generator=None):
        u = torch.rand(clean.shape, generator=generator, dtype=clean.dtype).to(clean.device)
        return torch.where(u < torch.sigmoid(clean), 1.0, -1.0).to(clean.dtype)


NOISES: dict[str, type[Noise]] = {"gaussian": Gaussian, "poisson": Poisson, "dither": LogisticDither}


def make_noise(name: str, sigma: float = 0.0, **kwargs) -> Noise:
    """Build a noise model by name. Keyword arguments meant for another model (e.g. `peak` in a config
    that uses Gaussian noise) are ignored so task configs can carry them all; unknown ones are errors."""
    if name not in NOISES:
        raise ConfigError(f"unknown noise {name!r}; choose one of {', '.join(NOISES)}")
    known = {p for cls in NOISES.values() for p in inspect.signature(cls.__init__).parameters} - {"self"}
    unknown = set(kwargs) - known
    if unknown:
        raise ConfigError(f"unknown noise parameter(s) {sorted(unknown)}; known: {sorted(known - {'sigma'})}")
    accepted = set(inspect.signature(NOISES[name].__init__).parameters)
    return NOISES[name](sigma=sigma, **{k: v for k, v in kwargs.items() if k in accepted})
