"""AUROC (and FPR at 95% TPR) of OOD scores, with torchmetrics; OOD is the positive class.

torchmetrics passes scores outside [0, 1] through a sigmoid, which in float32 saturates to 1.0 above
~17 and turns distinct large scores (a standardised sum over noise levels easily reaches 50) into ties.
So the scores are first mapped to [0, 1] by an order-preserving affine map in float64.
"""
from __future__ import annotations

import torch
from torch import Tensor

from invlab.errors import ConfigError


def _preds_and_target(id_scores, ood_scores) -> tuple[Tensor, Tensor]:
    a = torch.as_tensor(id_scores, dtype=torch.float64).reshape(-1)
    b = torch.as_tensor(ood_scores, dtype=torch.float64).reshape(-1)
    if a.numel() == 0 or b.numel() == 0:
        raise ConfigError(f"AUROC needs in-distribution and OOD scores; got {a.numel()} and {b.numel()}.")
    s = torch.cat([a, b])
    if not torch.isfinite(s).all():
        raise ConfigError(f"{int((~torch.isfinite(s)).sum())} OOD score(s) are not finite (NaN/inf); "
                          f"check the prior and the detector's noise levels.")
    lo, hi = s.min(), s.max()
    preds = (s - lo) / (hi - lo) if hi > lo else torch.full_like(s, 0.5)
    target = torch.cat([torch.zeros(a.numel()), torch.ones(b.numel())]).long()
    return preds, target


def auroc(id_scores, ood_scores) -> float:
    """Area under the ROC curve: P(score_ood > score_id) + ½ P(tie)."""
    from torchmetrics.functional.classification import binary_auroc

    preds, target = _preds_and_target(id_scores, ood_scores)
    return float(binary_auroc(preds, target))


def fpr_at_tpr(id_scores, ood_scores, tpr: float = 0.95) -> float:
    """The fraction of in-distribution images flagged when the threshold catches `tpr` of the OOD ones."""
    from torchmetrics.functional.classification import binary_roc

    preds, target = _preds_and_target(id_scores, ood_scores)
    fpr, tprs, _ = binary_roc(preds, target)
    return float(fpr[tprs >= tpr].min())
