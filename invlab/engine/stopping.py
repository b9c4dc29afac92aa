"""Stopping a reconstruction run on SIGTERM (what `timeout`, `kill`, Docker and SLURM preemption send) at
the next solver iteration, not at the end of the batch (which can be minutes away).

`stop_on_sigterm()` installs a handler for the run that only sets a flag (Lightning's own handler,
installed on top of it by `trainer.test`, keeps calling it); the solver callback `check_stop` raises
`RunInterrupted` at the next iteration boundary once the flag is set. The batch being solved is dropped
(a sample counts only once its files are written, see store.py), every finished sample stays, and a rerun
into the same run_dir solves the rest. The CLI records `interrupted` in status.json and exits 143.
"""
from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger("invlab")
EXIT_CODE = 128 + signal.SIGTERM  # 143, the shell's code for a process ended by SIGTERM

_requested = threading.Event()


class RunInterrupted(Exception):
    """The run stopped on SIGTERM before every sample was solved (not a failure: rerun to resume)."""


def stop_requested() -> bool:
    return _requested.is_set()


def check_stop(k=None, xk=None, info=None) -> None:
    """Solver callback (and a check anywhere else): raise RunInterrupted once SIGTERM has arrived."""
    if _requested.is_set():
        raise RunInterrupted("stopped by SIGTERM")


def _handler(signum, frame) -> None:
    if not _requested.is_set():
        log.warning("SIGTERM received: stopping at the next solver iteration; finished samples are kept "
                    "(rerun with the same run_dir to resume)")
    _requested.set()


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Route SIGTERM to the stop flag for the duration of one run (main thread only; a no-op elsewhere)."""
    _requested.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
