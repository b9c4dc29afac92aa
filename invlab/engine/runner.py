"""`reconstruct(cfg, dataset, task, prior, solver)`: one reconstruction experiment, start to report.

Builds the Trainer (from `cfg.trainer` and `cfg.device`) and the logger, runs `trainer.test` on the
Reconstruction module (every rank), then rank 0 merges the per-sample files into results.csv,
summary.json and grid.png, prints the summary and sends it to the logger. Returns the summary on
rank 0 and None on the other ranks.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from invlab.errors import ConfigError
from invlab.utils.config import whole_number

log = logging.getLogger("invlab")

ACCELERATORS = {"auto": "auto", "cpu": "cpu", "cuda": "gpu", "gpu": "gpu"}
# Engine-owned Trainer settings: autograd stays available to solvers (DPS), sharding is ours.
FIXED = {"inference_mode": False, "use_distributed_sampler": False, "enable_checkpointing": False,
         "enable_model_summary": False}


def names(cfg: DictConfig) -> dict[str, str]:
    return {g: str(OmegaConf.select(cfg, f"{g}.name", default=None) or "?")
            for g in ("solver", "task", "prior", "data")}


def fingerprint(cfg: DictConfig) -> dict:
    """What per-sample results depend on; a resumed run must match it. `data.limit` is left out: it
    changes how many samples there are, not what any one of them gives (extending a run is fine)."""
    out = {"seed": cfg.get("seed"), **{g: OmegaConf.to_container(cfg[g], resolve=True)
                                        for g in ("data", "task", "prior", "solver") if cfg.get(g) is not None}}
    if isinstance(out.get("data"), dict):
        out["data"].pop("limit", None)
    if isinstance(out.get("prior"), dict):  # compile / memory layout change no result beyond 1e-5; bf16 does
        for key in ("compile", "compile_mode", "channels_last"):
            out["prior"].pop(key, None)
        if out["prior"].get("precision") == "fp32":  # the default: run dirs from before the key still resume
            out["prior"].pop("precision")
    if cfg.get("track_best"):   # adds columns; only when on, so run dirs from before this key still resume
        out["track_best"] = True
    return out


def trainer_kwargs(cfg: DictConfig, run_dir: Path) -> dict:
    kw = OmegaConf.to_container(cfg.trainer, resolve=True) if "trainer" in cfg else {}
    device = str(cfg.get("device", "auto"))
    if device not in ACCELERATORS:
        raise ConfigError(f"device={device} is not one of auto, cpu, cuda.")
    if device in ("cuda", "gpu"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device=cuda was asked for but torch sees no CUDA GPU; use device=cpu or auto.")
    if kw.get("accelerator", "auto") == "auto":
        kw["accelerator"] = ACCELERATORS[device]
    check_devices(kw.get("devices", "auto"))
    if "num_nodes" in kw:
        kw["num_nodes"] = whole_number(kw["num_nodes"], "trainer.num_nodes", minimum=1)
    strategy = str(kw.get("strategy", "auto"))
    if any(word in strategy for word in ("spawn", "fork", "notebook")):
        # the per-process logger and module copies of these launchers do not come back to the main
        # process, which writes the report; `ddp` re-runs the script per rank and works end to end
        raise ConfigError(f"trainer.strategy={strategy} is not supported by run.py; use trainer.strategy=ddp.")
    kw.setdefault("default_root_dir", str(run_dir))
    return {**kw, **FIXED}


def check_devices(devices) -> None:
    """Lightning's `devices`: auto, a count (-1: all), a list of indices, or such a string ("3", "0,1")."""
    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if isinstance(devices, str) and devices.strip() != "auto":
        parts = [p.strip() for p in devices.split(",") if p.strip()]
        if parts and all(p.lstrip("-").isdigit() for p in parts):
            devices = [int(p) for p in parts] if "," in devices else int(parts[0])
    if isinstance(devices, (list, tuple)):
        fine = bool(devices) and all(whole(v) and v >= 0 for v in devices)
    else:
        fine = devices == "auto" or whole(devices) and (devices >= 1 or devices == -1)
    if not fine:
        raise ConfigError(f"trainer.devices must be auto, a number of devices >= 1 (-1: all) or a list of "
                          f"device indices such as [0,1], got {devices!r}.")


_QUIETED = False


def _quiet_lightning() -> None:
    """Lightning's own console handler doubles every line under Hydra's logging; drop it and the
    noise that says nothing about the run (sampler/worker advice that does not apply here, ads)."""
    global _QUIETED
    if _QUIETED:
        return
    _QUIETED = True
    root = logging.getLogger()
    if root.hasHandlers():
        lg = logging.getLogger("lightning")
        for h in list(lg.handlers):
            if type(h) is logging.StreamHandler:
                lg.removeHandler(h)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage())
    for pattern in (".*does not have many workers.*", ".*sync_dist=True.*", ".*treespec.*"):
        warnings.filterwarnings("ignore", message=pattern)


def reconstruct(cfg: DictConfig, dataset, task, prior, solver) -> dict | None:
    import lightning as L

    from invlab.engine.ddp import relaunch_context
    from invlab.engine.loggers import close_logger, log_report, make_logger
    from invlab.engine.module import Reconstruction
    from invlab.engine.report import finalize, format_summary
    from invlab.engine.stopping import RunInterrupted, stop_on_sigterm
    from invlab.engine.store import SampleStore
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    run_dir = Path(cfg.run_dir).absolute()
    store = SampleStore(run_dir)
    store.check_fingerprint(fingerprint(cfg), write=False)
    store.check_sources(getattr(dataset, "sources", None))
    kwargs = trainer_kwargs(cfg, run_dir)
    _quiet_lightning()
    logger = make_logger(cfg.logger) if "logger" in cfg else False
    trainer = L.Trainer(logger=logger, **kwargs)
    failed = True
    try:
        if trainer.is_global_zero:
            run_dir.mkdir(parents=True, exist_ok=True)
            store.check_fingerprint(fingerprint(cfg), write=True)
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            if logger:
                logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        module = Reconstruction(dataset, task, prior, solver, run_dir, seed=int(cfg.get("seed", 0)),
                                batch_size=int(cfg.get("batch_size", 1)),
                                save_tensors=bool(cfg.get("save_tensors", False)),
                                track_best=bool(cfg.get("track_best", False)))
        stopped = False
        try:
            with relaunch_context(trainer), stop_on_sigterm():
                trainer.test(module, verbose=False)
        except (RunInterrupted, SIGTERMException):  # ours mid-solve, Lightning's between batches
            stopped = True
        if not trainer.is_global_zero:
            failed = False
            return None
        summary = finalize(run_dir, len(dataset), names(cfg), int(cfg.get("grid_max", 8)))
        if stopped:  # the report of what is finished, then status.json says interrupted (cli/jobs.py)
            done = summary["samples"]
            raise RunInterrupted(f"stopped by SIGTERM with {done} of {len(dataset)} samples finished (written to "
                                 f"{run_dir}); rerun with run_dir={run_dir} to solve the rest.")
        log.info("results in %s\n%s", run_dir, format_summary(summary))
        log_report(logger, summary, run_dir / "grid.png")
        failed = False
        return summary
    finally:
        if trainer.is_global_zero:
            close_logger(logger, failed=failed)
