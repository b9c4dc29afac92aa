"""`python train.py experiment=train/<recipe> [overrides]`: train a learned prior and export it.

    python train.py experiment=train/dncnn_gray                       # the shipped recipe, into the run dir
    python train.py experiment=train/dncnn_gray export_to_package=true  # ... replacing the shipped weights
    python train.py experiment=train/dncnn_gray trainer.max_steps=50 logger=csv export=/tmp/d.safetensors
    python train.py data=folder data.path=~/BSD400 export=mine.safetensors   # random patches of a folder
    python train.py experiment=train/dncnn_gray ckpt_path=outputs/train/.../checkpoints/last.ckpt  # resume
    python train.py experiment=train/ddpm_mnist                       # a diffusion prior (module=ddpm net=unet)
    python train.py init_from=dncnn_gray data=mnist_train ...         # fine-tune a shipped checkpoint
    python train.py experiment=train/adapt_gray_mnist                 # ... from inpainting measurements only

The run dir holds Lightning checkpoints (`checkpoints/last.ckpt`), the logger's files and status.json.
At the end the final (or EMA) weights go to `export` (default `<run_dir>/<recipe>.safetensors`) as a
.safetensors checkpoint with its model card (steps, wall time, final loss, held-out PSNR per σ, data,
recipe) and the card as `<export>.md`. Only `export_to_package=true` writes into invlab/checkpoints/ (what
`prior=<recipe>` loads), never replacing a shipped prior with a shorter run unless `force=true`
(invlab/train/export.py).
User errors print one sentence (`error: ...`) and exit 1.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from invlab.cli.jobs import finish, follow_run_dir, run_job

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")  # repo root = parent of invlab/
log = logging.getLogger("invlab")


def _container(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def trainer_kwargs(cfg: DictConfig, run_dir: Path) -> dict:
    import torch

    kw = _container(cfg.trainer)
    if kw.get("precision", "auto") == "auto":  # bf16 autocast on CUDA only; CPU stays in float32
        on_gpu = kw.get("accelerator", "auto") in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        kw["precision"] = "bf16-mixed" if on_gpu else "32-true"
    kw.setdefault("default_root_dir", str(run_dir))
    return kw


def build_data(cfg: DictConfig):
    from invlab.errors import ConfigError
    from invlab.train.common import training_dataset
    from invlab.utils.config import build

    for group in ("data", "val_data", "net"):
        missing = sorted(OmegaConf.missing_keys(cfg[group])) if cfg.get(group) is not None else []
        if missing:
            key = missing[0] if missing[0].startswith(f"{group}.") else f"{group}.{missing[0]}"
            raise ConfigError(f"{key} is required (still '???'); set it on the command line, e.g. {key}=...")
    train_ds = build(cfg.data)
    measure = cfg.get("measure") or {}
    if measure.get("task"):  # measurements only: ỹ and masks of an inpainting task, masked loss
        if cfg.get("patches") is not None:
            raise ConfigError("training from measurements (measure.task) uses whole images; set patches=null.")
        from invlab.train.measured import MeasuredImages
        from invlab.utils.config import load_option

        task = build(load_option("task", str(measure.task), list(measure.get("overrides") or [])))
        train_ds = MeasuredImages(train_ds, task, int(measure.get("seed", 0)), float(measure.get("fill", 0.5)))
    train_ds = training_dataset(train_ds, _container(cfg.get("patches")) or None, int(cfg.seed))
    val_ds = build(cfg.val_data) if cfg.get("val_data") is not None else None
    if len(train_ds) == 0:
        raise ConfigError("the training dataset is empty (check data.path and data.limit).")
    channels = int(train_ds[0]["x"].shape[0])
    if not cfg.get("init_from") and channels != int(cfg.net.get("in_channels", 1)):
        raise ConfigError(f"the training data has {channels} channel(s) but net.in_channels="
                          f"{cfg.net.get('in_channels', 1)}; set net.in_channels={channels} or change the data.")
    if val_ds is not None and int(val_ds[0]["x"].shape[0]) != channels:
        raise ConfigError(f"the validation data ({cfg.val_data.get('name')}) has {val_ds[0]['x'].shape[0]} "
                          f"channel(s) but the training data has {channels}.")
    return train_ds, val_ds


def train(cfg: DictConfig) -> Path | None:
    from invlab.engine.runner import check_devices
    from invlab.errors import CheckpointError, ConfigError
    from invlab.utils.config import whole_number

    whole_number(cfg.get("seed", 0), "seed", minimum=0)  # whole-number settings: one sentence, not int('abc')
    whole_number(OmegaConf.select(cfg, "loader.batch_size", default=1), "loader.batch_size", minimum=1)
    check_devices(OmegaConf.select(cfg, "trainer.devices", default="auto"))
    run_dir = Path(str(cfg.run_dir)).absolute()
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(str(ckpt_path)).expanduser().is_file():
        raise CheckpointError(f"ckpt_path={ckpt_path} does not exist; give a Lightning checkpoint of an earlier "
                              f"run, e.g. outputs/train/<recipe>/<date>/checkpoints/last.ckpt.")
    from invlab.train.export import check_replace, destination

    export_path = destination(cfg)  # refuses an export into the shipped checkpoints without the flag
    max_steps = cfg.trainer.get("max_steps")
    if isinstance(max_steps, int) and max_steps > 0:
        check_replace(export_path, max_steps, cfg, planned=True)
    train_ds, val_ds = build_data(cfg)

    import lightning as L
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from torch.utils.data import DataLoader

    from invlab.engine.ddp import relaunch_context
    from invlab.engine.loggers import close_logger, make_logger
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    from invlab.train.common import parse_duration

    module_kw = _container(cfg.module)
    if module_kw.get("time_budget_s") is None:  # the LR schedule also ends when trainer.max_time runs out
        module_kw["time_budget_s"] = parse_duration(cfg.trainer.get("max_time"))
    module_cls = hydra.utils.get_class(module_kw.pop("_target_", "invlab.train.denoiser.DenoiserModule"))
    arch, init = _container(cfg.net), None
    if cfg.get("init_from"):  # fine-tuning: the checkpoint's architecture and weights replace `net`
        from invlab.priors.checkpoint import load_checkpoint

        init, arch, _ = load_checkpoint(str(cfg.init_from))
        if int(arch.get("in_channels", 1)) != int(train_ds[0]["x"].shape[0]):
            raise ConfigError(f"init_from={cfg.init_from} has {arch.get('in_channels', 1)} channel(s) but the "
                              f"training data has {train_ds[0]['x'].shape[0]}.")
    module = module_cls(arch=arch, **module_kw)
    if init is not None:
        module.init_weights(init.state_dict())
    ld = _container(cfg.loader)
    workers = int(ld.get("num_workers", 0))
    shuffle = not hasattr(train_ds, "set_epoch")  # random patches are random already
    batch_size = min(int(ld["batch_size"]), len(train_ds))  # a few-image fine-tune: one batch of all of them
    if batch_size < int(ld["batch_size"]):
        log.warning("only %d training images: batch size %d instead of %s", len(train_ds), batch_size, ld["batch_size"])
    train_loader = DataLoader(train_ds, batch_size=batch_size, shuffle=shuffle, drop_last=True,
                              num_workers=workers, persistent_workers=False,
                              generator=torch.Generator().manual_seed(int(cfg.seed)))
    val_loader = None if val_ds is None else DataLoader(val_ds, batch_size=int(ld.get("val_batch_size", 8)),
                                                        num_workers=0)
    logger = make_logger(cfg.logger) if cfg.get("logger") is not None else False
    callbacks = [ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="step{step}",
                                 every_n_train_steps=int(cfg.checkpoint_every), save_last=True, save_top_k=1,
                                 auto_insert_metric_name=False)]
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = L.Trainer(logger=logger, callbacks=callbacks, **trainer_kwargs(cfg, run_dir))
    failed = True
    try:
        with relaunch_context(trainer):
            trainer.fit(module, train_loader, val_loader, ckpt_path=str(ckpt_path) if ckpt_path else None)
        failed = False
    finally:
        if failed:
            close_logger(logger, failed=True)
    if not trainer.is_global_zero:
        return None
    try:
        check_replace(export_path, int(trainer.global_step), cfg)  # max_time may have stopped it short
    except ConfigError as exc:  # keep the trained weights, just not over the shipped ones
        kept, _ = export(cfg, module, trainer, train_ds, val_ds, run_dir / f"{cfg.recipe}.safetensors")
        close_logger(logger, failed=True)
        raise ConfigError(f"{exc} The weights went to {kept} instead.") from exc
    path, metrics = export(cfg, module, trainer, train_ds, val_ds, export_path)
    if logger:
        logger.log_metrics({f"export/{k}": v for k, v in metrics.items()}, step=trainer.global_step)
        close_logger(logger)
    return path


def export(cfg: DictConfig, module, trainer, train_ds, val_ds, path: Path) -> tuple[Path, dict]:
    """Write the exported weights and their model card to `path`; returns it and the val metrics."""
    import datetime as dt

    import torch

    import invlab
    from invlab.nets.layers import refresh_spectral_norms
    from invlab.priors.checkpoint import save_checkpoint
    from invlab.train.common import evaluate_denoiser

    net = module.export_net().eval()
    refresh_spectral_norms(net)  # tighten the norm estimates of a nonexpansive net before shipping it
    hp = module.hparams
    metrics = {}
    if val_ds is not None and hasattr(module, "evaluate"):  # modules whose net is not a D(y, σ) (diffusion)
        metrics = module.evaluate(val_ds, int(cfg.loader.get("val_batch_size", 8)))
    elif val_ds is not None:
        metrics = evaluate_denoiser(net, val_ds, hp.val_sigmas, hp.val_seed,
                                    int(cfg.loader.get("val_batch_size", 8)), module.device)
    x0 = train_ds[0]["x"]
    card = {
        "recipe": str(cfg.recipe),
        "data": str(cfg.data.get("name", "?")),
        "val_data": str(cfg.val_data.get("name", "?")) if val_ds is not None else None,
        "steps": int(trainer.global_step),
        **({"init_from": str(cfg.init_from)} if cfg.get("init_from") else {}),
        **({"measurements": {k: v for k, v in _container(cfg.measure).items() if v not in (None, [])}}
           if (cfg.get("measure") or {}).get("task") else {}),
        "batch_size": int(cfg.loader.batch_size),
        "wall_seconds": round(module.total_wall_seconds(), 1),
        "final_loss": module.final_loss,
        "metrics": {k: round(v, 3) for k, v in metrics.items()},
        "channels": int(x0.shape[0]),
        "image_size": list(x0.shape[-2:]),
        "value_range": [0.0, 1.0],
        **(module.card() if hasattr(module, "card") else {  # a module may describe itself (diffusion: schedule)
            "loss": hp.loss,
            "sigma_range": [float(hp.sigma_min), float(hp.sigma_max)],
            "sigma_range_255": [round(float(hp.sigma_min) * 255, 2), round(float(hp.sigma_max) * 255, 2)],
            "ema_decay": hp.ema_decay}),
        "device": str(module.device),
        "precision": str(trainer.precision),
        "torch": torch.__version__,
        "invlab": invlab.__version__,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    path = save_checkpoint(path, net, module.arch, card)
    shown = ", ".join(f"{k}={v:.2f} dB" for k, v in metrics.items())
    print(f"exported {path} ({card['steps']} steps, {card['wall_seconds']:.0f} s{'; ' + shown if shown else ''})")
    return path, metrics


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def _hydra_entry(cfg: DictConfig) -> None:
    run_job(train, cfg)


def main() -> None:
    from invlab.cli.choices import plus_experiment

    plus_experiment()  # +experiment=X is experiment=X (the defaults list has the slot already)
    follow_run_dir()  # run_dir=X: Hydra's .hydra/ and log go to X too
    _hydra_entry()
    finish()


if __name__ == "__main__":
    main()
