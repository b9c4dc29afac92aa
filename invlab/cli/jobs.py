"""One Hydra job, run the same way by every entry point (run.py, train.py, ood.py).

The job's status is recorded in its run directory; a user error becomes one sentence on stderr.
In a sweep a failed job is logged and remembered, the sweep goes on, and `finish()` exits non-zero
at the end; a single run exits at once.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

log = logging.getLogger("invlab")
FAILED_JOBS: list[str] = []  # "run_dir: message" of each failed job of this process' sweep


def run_job(work: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from invlab.cli.choices import check_experiment
    from invlab.cli.errors import record_status, user_message
    from invlab.cli.sweeps import note_failure
    from invlab.engine.stopping import EXIT_CODE as STOP_EXIT_CODE, RunInterrupted

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    run_dir = Path(str(cfg.get("run_dir", "."))).absolute()
    try:
        check_experiment()  # an unknown experiment= would otherwise run the defaults without a word
        result = work(cfg)
    except RunInterrupted as exc:  # SIGTERM: finished samples kept; the whole sweep stops too
        record_status(run_dir, "interrupted", exc, str(exc))
        print(f"interrupted: {exc}", file=sys.stderr)
        sys.exit(STOP_EXIT_CODE)
    except Exception as exc:
        msg = user_message(exc)
        record_status(run_dir, "failed", exc, msg)
        if multirun:
            log.error("job failed (%s): %s", run_dir, msg or f"{type(exc).__name__}: {exc}", exc_info=msg is None)
            FAILED_JOBS.append(f"{run_dir}: {msg or type(exc).__name__}")
            note_failure(FAILED_JOBS[-1])  # for the sweep's process when this job runs elsewhere (submitit)
            return None
        if msg is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(1)
    record_status(run_dir, "ok")
    return result


def follow_run_dir(argv: list[str] | None = None) -> list[str]:
    """`run_dir=X` (single runs): Hydra's own files (`.hydra/`, `<job>.log`) go to X as well, not to a new
    dated folder under outputs/, by adding `hydra.run.dir=X` to the command line (an explicit
    `hydra.run.dir=` wins; a sweep's jobs keep their own folders). `run_dir` defaults to Hydra's output dir,
    so the config alone cannot say "follow it". Rerunning into an X that already holds files keeps its
    first `.hydra/` (hydra.output_subdir=null); the log is appended to. Edits sys.argv when argv is None."""
    args = sys.argv if argv is None else argv
    rest = args[1:]
    if any(a in ("-m", "--multirun") for a in rest) or any(a.startswith("hydra.run.dir=") for a in rest):
        return args
    given = [a.split("=", 1)[1] for a in rest if a.startswith("run_dir=")]
    if not given:
        return args
    target = Path(given[-1].strip("'\"")).expanduser()
    if "${" not in given[-1] and not _writable(target):
        return args  # Hydra would fail with a traceback; experiment() refuses this run_dir in one sentence
    args.append(f"hydra.run.dir={given[-1]}")
    if target.is_dir() and any(target.iterdir()) and not any(a.startswith("hydra.output_subdir=") for a in rest):
        args.append("hydra.output_subdir=null")
    return args


def _writable(target: Path) -> bool:
    """Whether the run directory can be made and written (read-only, below a file, /proc: no)."""
    from invlab.engine.store import SampleStore
    from invlab.errors import RunDirError

    try:
        SampleStore(target).check_writable()
    except RunDirError:
        return False
    return True


def finish() -> None:
    """After the Hydra entry returns: exit 1, listing them, if any job of a sweep failed."""
    if FAILED_JOBS:
        print(f"error: {len(FAILED_JOBS)} job(s) of the sweep failed:", file=sys.stderr)
        for line in FAILED_JOBS:
            print(f"  {line}", file=sys.stderr)
        sys.exit(1)
