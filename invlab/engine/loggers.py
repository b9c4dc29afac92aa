"""The Lightning logger of a run, from `conf/logger/<name>.yaml`.

A logger config is `_target_` plus constructor arguments; `name:` is the option's name (stripped, as in
every group) and `run_name:` becomes the logger's own `name` argument (W&B run name, CSV subfolder).
`_target_: null` (logger=none) means no logger.

W&B: `WANDB_MODE=disabled` in the environment means no logger. Online (`logger.offline=false`) the run is
started here, so that a missing or rejected API key, or a server that cannot be reached within
`logger.init_timeout` seconds, is one sentence before anything is solved rather than a traceback (or a
wait of minutes at "setting up run") later.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("invlab")


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
    if not kwargs["_target_"].endswith("WandbLogger"):
        return instantiate(kwargs, _convert_="all")
    timeout = kwargs.pop("init_timeout", None)
    if os.environ.get("WANDB_MODE", "").strip().lower() == "disabled":
        log.info("W&B is disabled (WANDB_MODE=disabled): no experiment logger")
        return False
    online = not kwargs.get("offline", True)
    if not online:
        os.environ["WANDB_MODE"] = "offline"  # also covers wandb calls made outside the logger
    os.makedirs(kwargs.get("save_dir") or ".", exist_ok=True)
    if online and timeout is not None:
        import wandb

        kwargs["settings"] = wandb.Settings(init_timeout=float(timeout))
    logger = instantiate(kwargs, _convert_="all")
    if online:
        start_online(logger, timeout)
    return logger


def start_online(logger: Any, timeout) -> None:
    """Start the W&B run now; a wandb error (no API key, a rejected key, no network) becomes a ConfigError."""
    import wandb

    from invlab.errors import ConfigError

    try:
        logger.experiment  # noqa: B018 - the property starts the run (wandb.init)
    except wandb.errors.Error as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"W&B could not start an online run (logger.offline=false): {reason.rstrip('.')}; "
                          f"check the API key (`wandb login` or WANDB_API_KEY) and the network (waited up to "
                          f"logger.init_timeout={timeout} s), or set logger.offline=true.") from err


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
