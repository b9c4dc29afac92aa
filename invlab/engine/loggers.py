"""The Lightning logger of a run, from `conf/logger/<name>.yaml`.

A logger config is `_target_` plus constructor arguments; `name:` is the option's name (stripped, as in
every group) and `run_name:` becomes the logger's own `name` argument (W&B run name, CSV subfolder).
`_target_: null` (logger=none) means no logger.
"""
from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf


def make_logger(node: DictConfig | dict) -> Any:
    """A Lightning logger, or False for none. W&B stays offline unless `offline: false` is set."""
    from hydra.utils import instantiate

    kwargs = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    kwargs.pop("name", None)
    run_name = kwargs.pop("run_name", None)
    if kwargs.get("_target_") is None:
        return False
    if run_name is not None:
        kwargs["name"] = run_name
    if kwargs["_target_"].endswith("WandbLogger"):
        if kwargs.get("offline", True):
            os.environ["WANDB_MODE"] = "offline"  # also covers wandb calls made outside the logger
        os.makedirs(kwargs.get("save_dir") or ".", exist_ok=True)
    return instantiate(kwargs, _convert_="all")


def log_report(logger: Any, summary: dict, grid_path) -> None:
    """Summary means as final metrics, and the grid image where the logger takes images (W&B)."""
    if not logger:
        return
    metrics = {f"summary/{k}": v["mean"] for k, v in summary["metrics"].items() if v["mean"] is not None}
    metrics.update({f"summary/count_{s}": n for s, n in summary["counts"].items()})
    logger.log_metrics(metrics)
    if grid_path is not None and grid_path.exists() and hasattr(logger, "log_image"):
        logger.log_image(key="grid", images=[str(grid_path)],
                         caption=["rows: truth | measurement | reconstruction"])
    logger.save()


def close_logger(logger: Any, failed: bool = False) -> None:
    """Finish a W&B run, so the next job of a sweep (same process) starts a run of its own."""
    if not logger:
        return
    if type(logger).__name__ == "WandbLogger" and getattr(logger, "_experiment", None) is not None:
        logger.experiment.finish(exit_code=1 if failed else 0)
    else:
        logger.finalize("failed" if failed else "success")
