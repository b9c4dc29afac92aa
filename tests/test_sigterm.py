"""SIGTERM stops a run at the next solver iteration (not at the end of the batch), records `interrupted`,
keeps every finished sample, and a rerun into the same run_dir solves the rest: each sample exactly once.

The stand-in solver sleeps per iteration (batches of 2 samples, 20 iterations × 0.2 s = 4 s a batch) and
logs every batch it *finishes*; the signal goes in while the second batch is being solved.
"""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import pytest

from helpers_engine import REPO, TINY, cli_env, write_conf

pytestmark = pytest.mark.slow  # two run.py processes (~30 s on a busy 2-core machine)


def start(tmp_path, run_dir, log):
    cmd = [sys.executable, str(REPO / "run.py"), write_conf(tmp_path / "conf"), *TINY, f"run_dir={run_dir}",
           "data.n=6", "solver.iters=20", "+solver.delay=0.2", f"solver.log_path={log}", "logger=none"]
    return subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path, proc, timeout=120.0):
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


def test_sigterm_stops_mid_batch_records_interrupted_and_resumes(tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "solved.log"
    proc = start(tmp_path, run_dir, log)
    wait_for(run_dir / "samples" / "00001.json", proc)   # batch 1 (samples 0, 1) written
    time.sleep(1.0)                                     # well inside batch 2's 4 s of solving
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=60)
    stop_seconds = time.monotonic() - t0
    assert proc.returncode == 143, err[-3000:]
    assert "interrupted: stopped by SIGTERM with 2 of 6 samples finished" in err, err[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted" and "rerun with run_dir=" in status["error"]
    # batch 2 was dropped mid-solve, not finished: only samples 0 and 1 exist, and were solved once
    assert sorted(p.name for p in (run_dir / "samples").glob("*.json")) == ["00000.json", "00001.json"]
    assert sorted(int(line.split()[0]) for line in log.read_text().splitlines()) == [0, 1]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["counts"] == {"ok": 2, "missing": 4}
    assert stop_seconds < 30, stop_seconds

    # rerun: solves 2..5 only; every sample present exactly once, status ok
    proc = start(tmp_path, run_dir, log)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    assert json.loads((run_dir / "status.json").read_text()) == {"status": "ok"}
    assert sorted(int(line.split()[0]) for line in log.read_text().splitlines()) == [0, 1, 2, 3, 4, 5]
    with open(run_dir / "results.csv") as f:
        assert [int(r["index"]) for r in csv.DictReader(f)] == [0, 1, 2, 3, 4, 5]
    assert json.loads((run_dir / "summary.json").read_text())["counts"] == {"ok": 6}
