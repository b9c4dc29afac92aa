"""The OOD-detector contract shared by EigenScore and the baselines.

A detector turns a batch of clean images into per-image features, one or more per noise level σ
(`features`, the expensive part: denoiser calls). `fit` standardises every feature on in-distribution
training features (mean and population std, as sklearn's StandardScaler) and `score` sums the
standardised features: higher = more out-of-distribution. EigenScore's detector is exactly this
(methods.md A, step 5); the baselines reuse it so every method aggregates noise levels the same way.

Randomness is keyed per image: the noise draws (and probe vectors) of an image depend only on
(seed, σ index, the image's key, the draw index), so features do not depend on the batch size or order.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from invlab.errors import ConfigError
from invlab.ops.task import make_generator

F64 = torch.float64


class Detector:
    """Base class. Subclasses set `per_sigma` (names of the features at each σ) and implement
    `sigma_features(prior, x, sigma_index, keys) -> (B, len(per_sigma))`."""

    name: str = "detector"
    per_sigma: tuple[str, ...] = ("value",)

    def __init__(self, sigmas: Sequence[float], reps: int = 1, standardize: bool = True, seed: int = 0,
                 chunk: int | None = 512):
        self.sigmas = [float(s) for s in sigmas]
        if not self.sigmas or min(self.sigmas) <= 0:
            raise ConfigError(f"detector.sigmas must be a nonempty list of positive noise levels, got {sigmas}.")
        if int(reps) < 1:
            raise ConfigError(f"detector.reps must be at least 1, got {reps}.")
        self.reps, self.standardize, self.seed, self.chunk = int(reps), bool(standardize), int(seed), chunk
        self.mean: Tensor | None = None
        self.std: Tensor | None = None
        self.stats: dict[str, float] = {}

    # ---- features ---------------------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return [f"{f}@{s:g}" for s in self.sigmas for f in self.per_sigma]

    @torch.no_grad()
    def features(self, prior, x: Tensor, keys: Sequence[int]) -> Tensor:
        """(B, n_features) float64 features of the clean images x (B, C, H, W); keys identify images."""
        if len(keys) != x.shape[0]:
            raise ConfigError(f"got {len(keys)} keys for {x.shape[0]} images.")
        cols = [self.sigma_features(prior, x, i, [int(k) for k in keys]) for i in range(len(self.sigmas))]
        return torch.cat([c.reshape(x.shape[0], -1).to(F64).cpu() for c in cols], dim=1)

    def sigma_features(self, prior, x: Tensor, sigma_index: int, keys: list[int]) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def generators(self, sigma_index: int, keys: list[int]) -> list[list[torch.Generator]]:
        """One generator per (image, draw): [image][rep]."""
        return [[make_generator(self.seed, sigma_index, k, r) for r in range(self.reps)] for k in keys]

    def noisy(self, x: Tensor, sigma: float, gens: list[list[torch.Generator]]) -> Tensor:
        """x + σ n for every image and draw: (B·reps, C, H, W), image-major; draws consume each generator."""
        shape = x.shape[1:]
        n = torch.stack([torch.randn(shape, generator=g, dtype=F64) for row in gens for g in row])
        xr = x.repeat_interleave(self.reps, dim=0)
        return xr + sigma * n.to(device=x.device, dtype=x.dtype)

    def per_image(self, values: Tensor, reduce: str = "mean") -> Tensor:
        """(B·reps, ...) → (B, ...) by the mean (or median) over the draws of each image."""
        v = values.reshape(-1, self.reps, *values.shape[1:])
        return v.median(dim=1).values if reduce == "median" else v.mean(dim=1)

    def add_stat(self, key: str, value: float) -> None:
        self.stats[key] = self.stats.get(key, 0.0) + float(value)

    def summary(self) -> dict:
        """Counters accumulated over every `features` call (for the run's report)."""
        return dict(self.stats)

    # ---- detection --------------------------------------------------------------------------------
    def fit(self, train_features: Tensor) -> "Detector":
        """Fit the standardisation on in-distribution training features (N, F)."""
        f = torch.as_tensor(train_features, dtype=F64)
        if f.shape[0] < 2:
            raise ConfigError("the detector needs at least 2 in-distribution training images to standardise.")
        self.mean = f.mean(0)
        std = f.std(0, unbiased=False)
        self.std = torch.where(std > 0, std, torch.ones_like(std))  # a constant feature contributes 0
        return self

    def standardized(self, features: Tensor) -> Tensor:
        f = torch.as_tensor(features, dtype=F64)
        if not self.standardize:
            return f
        if self.mean is None:
            raise ConfigError("call fit(train_features) before score(): the standardisation is not fitted.")
        return (f - self.mean) / self.std

    def score(self, features: Tensor) -> Tensor:
        """(N,) OOD scores: the sum of the standardised features (higher = more OOD)."""
        return self.standardized(features).sum(1)

    def describe(self) -> str:
        return f"{type(self).__name__}(sigmas={self.sigmas}, reps={self.reps})"
