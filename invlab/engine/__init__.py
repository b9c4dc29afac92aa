"""The reconstruction engine: a dataset solved batch by batch as a Lightning test loop.

- runner.py  `reconstruct(cfg, dataset, task, prior, solver)`: Trainer + logger, run, report.
- module.py  the LightningModule (measure, solve, per-sample metrics and files, DDP sharding).
- store.py   per-sample files in `<run_dir>/samples/` (resume and DDP merge read them back).
- report.py  results.csv, summary.json, grid.png and the console summary.
- loggers.py W&B (offline) / CSV / none from `conf/logger/`.
- ddp.py     making Lightning's per-rank relaunch of a Hydra script use the same run dir.

Nothing heavy is imported here: lightning and torchmetrics load with `runner.reconstruct`.
"""
