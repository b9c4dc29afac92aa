"""OOD evaluation: features of three image sets through one detector and prior, then AUROC.

    fit  — in-distribution TRAINING images: the detector's standardisation is fitted on them
    id   — in-distribution test images (negatives)
    ood  — out-of-distribution images (positives)

Images are keyed by (set, position), so the noise draws of an image do not depend on batching.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from invlab.analysis.auroc import auroc, fpr_at_tpr
from invlab.analysis.detector import Detector
from invlab.errors import ConfigError

log = logging.getLogger("invlab")
SET_CODES = {"fit": 0, "id": 1, "ood": 2}
KEY_STRIDE = 10_000_000  # image key = set code · stride + position


@dataclass
class OODResult:
    auroc: float
    fpr95: float
    scores_id: list[float]
    scores_ood: list[float]
    feature_names: list[str]
    auroc_per_feature: dict[str, float]
    n_fit: int
    n_id: int
    n_ood: int
    seconds: float
    nfe: int
    seconds_per_set: dict[str, float] = field(default_factory=dict)
    features: dict[str, Tensor] = field(default_factory=dict, repr=False)


def compute_features(detector: Detector, prior, dataset, role: str, batch_size: int = 16,
                     device: str | torch.device = "cpu") -> Tensor:
    """(N, n_features) features of every image of `dataset` (items {"x": (C, H, W)})."""
    n = len(dataset)
    if n == 0:
        raise ConfigError(f"the {role} image set is empty (check the pair's limits).")
    from tqdm.auto import tqdm

    out, t0 = [], time.perf_counter()
    bar = tqdm(total=n, desc=f"{detector.name} {role}", unit="img", disable=None, leave=False)
    for start in range(0, n, int(batch_size)):
        pos = list(range(start, min(n, start + int(batch_size))))
        x = torch.stack([torch.as_tensor(dataset[i]["x"]) for i in pos]).float().to(device)
        keys = [SET_CODES[role] * KEY_STRIDE + i for i in pos]
        out.append(detector.features(prior, x, keys))
        bar.update(len(pos))
        log.info("%s: %d/%d images (%.1f s)", role, pos[-1] + 1, n, time.perf_counter() - t0)
    bar.close()
    return torch.cat(out)


def evaluate(detector: Detector, prior, fit_set, id_set, ood_set, batch_size: int = 16,
             device: str | torch.device = "cpu") -> OODResult:
    """Fit the detector on `fit_set`, score `id_set` and `ood_set`, and measure AUROC (OOD positive)."""
    t0 = time.perf_counter()
    nfe0 = prior.stats.nfe
    feats, seconds = {}, {}
    for role, ds in (("fit", fit_set), ("id", id_set), ("ood", ood_set)):
        t = time.perf_counter()
        feats[role] = compute_features(detector, prior, ds, role, batch_size, device)
        seconds[role] = round(time.perf_counter() - t, 3)
    detector.fit(feats["fit"])
    s_id, s_ood = detector.score(feats["id"]), detector.score(feats["ood"])
    z_id, z_ood = detector.standardized(feats["id"]), detector.standardized(feats["ood"])
    per_feature = {name: auroc(z_id[:, j], z_ood[:, j]) for j, name in enumerate(detector.feature_names)}
    return OODResult(
        auroc=auroc(s_id, s_ood), fpr95=fpr_at_tpr(s_id, s_ood, 0.95),
        scores_id=s_id.tolist(), scores_ood=s_ood.tolist(),
        feature_names=list(detector.feature_names), auroc_per_feature=per_feature,
        n_fit=len(fit_set), n_id=len(id_set), n_ood=len(ood_set),
        seconds=round(time.perf_counter() - t0, 3), nfe=prior.stats.nfe - nfe0,
        seconds_per_set=seconds, features=feats)
