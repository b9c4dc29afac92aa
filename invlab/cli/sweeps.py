"""What a sweep needs beyond one job: failures reported from jobs that ran in other processes, and the
objective a hyperparameter search maximises.

Failures. With Hydra's basic launcher every job runs in the sweep's own process and `jobs.FAILED_JOBS` sees
each failure. With submitit (`hydra/launcher=local_jobs` or `slurm`) a job runs in another process, maybe on
another machine, and only its pickled return value comes back. So a failed job of a multirun also appends one
line to `<sweep dir>/.failed_jobs` (the sweep dir is on a filesystem every job shares); `SweepReport`, a Hydra
callback of conf/hydra/default.yaml, empties that file when the sweep starts and, when it ends, adds its lines
to `FAILED_JOBS`, so `jobs.finish()` lists every failure and exits 1 whichever launcher ran the jobs.

Search. A config with a top-level `objective: <metric>` (conf/hparams_search/*.yaml) makes run.py's job return
the mean of that metric from its summary (a float for the Optuna sweeper) instead of the summary. A search
tunes on validation data only: a data choice whose name says test is refused before any trial runs.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Callable

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from invlab.errors import ConfigError

log = logging.getLogger("invlab")
FAILURES_FILE = ".failed_jobs"


def failures_file(sweep_dir) -> Path:
    return Path(str(sweep_dir)).absolute() / FAILURES_FILE


def note_failure(line: str) -> None:
    """Append a failed job's `run_dir: message` line to its sweep's failure file (multirun jobs only)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    try:
        path = failures_file(HydraConfig.get().sweep.dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(line.replace("\n", " ") + "\n")
    except OSError as exc:  # the in-process list still has it; never hide the job's own failure
        log.warning("could not record the failure in the sweep dir: %s", exc)


class SweepReport(Callback):
    """Hydra callback: refuse a search on test data; gather the failures of jobs run in other processes."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_search_data(config)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        failures_file(config.hydra.sweep.dir).unlink(missing_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from invlab.cli.jobs import FAILED_JOBS

        path = failures_file(config.hydra.sweep.dir)
        if not path.exists():
            return
        known = {line.replace("\n", " ") for line in FAILED_JOBS}  # the basic launcher's jobs: listed already
        for line in path.read_text().splitlines():
            if line and line not in known:
                FAILED_JOBS.append(line)
                known.add(line)


def is_test_data(name: str) -> bool:
    return "test" in str(name).lower().replace("-", "_").split("_")


def check_search_data(cfg: DictConfig) -> None:
    """A search (`objective` set) must not see test data: refuse a data choice named as a test split."""
    if cfg.get("objective") is None or cfg.get("data") is None:
        return
    name = str(cfg.data.get("name", "?"))
    if is_test_data(name):
        raise ConfigError(f"a hyperparameter search tunes on validation data only, but data={name} is a test "
                          f"split; use a validation split (e.g. data=mnist_val, gray_val, color_val).")
    split = cfg.data.get("split")  # face_clips, nmr_synth: one config, a split field; a *_val config (mnist_val:
    if not name.endswith("_val") and split is not None and is_test_data(str(split)):  # MNIST's test file) is val
        raise ConfigError(f"a hyperparameter search tunes on validation data only, but data={name} has "
                          f"split={split}; set data.split=val.")


def objective_value(summary: dict | None, metric: str) -> float | None:
    """The mean of `metric` over all samples of the run; None (a failed trial) when any sample has no value
    (diverged), since a mean over the survivors would reward settings that diverge on the hard samples. None,
    not NaN: the Optuna sweeper records a non-number as a failed trial and goes on, while optuna 2.10 refuses
    a NaN value and the sweeper's retry as FAIL with that value raises, ending the whole search."""
    if summary is None:
        return None
    entry = summary.get("metrics", {}).get(metric)
    if entry is None:
        raise ConfigError(f"objective={metric} is not a metric of this run; it has "
                          f"{', '.join(summary.get('metrics', {})) or 'none'}.")
    if int(entry.get("n", 0)) < int(summary.get("samples", 0)) or entry.get("mean") is None:
        log.warning("objective %s: %s of %s samples have a value; the trial counts as failed",
                    metric, entry.get("n", 0), summary.get("samples"))
        return None
    return float(entry["mean"])


def searched(work: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """`work` (returning a run's summary), returning `objective_value` instead when the config names an objective."""
    def run(cfg: DictConfig) -> Any:
        if cfg.get("objective") is None:
            return work(cfg)
        check_search_data(cfg)
        return objective_value(work(cfg), str(cfg.objective))
    return run
