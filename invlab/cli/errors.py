"""Turning failures into one sentence for the user, and into files in the run directory.

User-fixable failures are `invlab.errors.InvlabError`, a missing file (a checkpoint path) and a
mandatory config value left at `???`. Hydra wraps exceptions raised inside `instantiate` in an
`InstantiationException` whose `__cause__` is the original, so the cause chain is searched.
Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import json
import os
import traceback
from pathlib import Path


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if text.endswith((".", "?", "!")) else text + "."


def user_message(exc: BaseException) -> str | None:
    """The one-sentence message for a user-fixable failure, or None for anything else."""
    from omegaconf.errors import MissingMandatoryValue

    from invlab.errors import InvlabError

    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, InvlabError):
            return _one_line(str(err))
        if isinstance(err, FileNotFoundError):
            what = err.filename if err.filename is not None else (err.args[0] if err.args else "")
            return _one_line(f"file not found: {what}")
        if isinstance(err, MissingMandatoryValue):
            key = getattr(err, "full_key", None) or "a config value"
            return _one_line(f"the config value {key} is required (still '???'); set it on the command "
                             f"line, e.g. {key}=...")
        err = err.__cause__
    return None


def _refused(exc: BaseException) -> bool:
    """True when the failure is a run directory that was refused (RunDirError): nothing goes into it."""
    from invlab.errors import RunDirError

    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        if isinstance(err, RunDirError):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def is_rank_zero() -> bool:
    """True in the launching process (before Lightning exists we only have the launcher's env vars; srun
    numbers its tasks in SLURM_PROCID)."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def record_status(run_dir: str | Path, status: str, exc: BaseException | None = None,
                  message: str | None = None) -> None:
    """Write `status.json` (and `error.txt` with the traceback on failure) into the run directory."""
    if not is_rank_zero() or (exc is not None and _refused(exc)):
        return
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        info = {"status": status}
        if exc is not None:
            info["error"] = message or f"{type(exc).__name__}: {exc}"
            (run_dir / "error.txt").write_text(
                "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        (run_dir / "status.json").write_text(json.dumps(info, indent=1))
    except OSError:  # a status file must never hide the original failure
        pass
