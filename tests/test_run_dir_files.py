"""`run_dir=X` keeps a run's files together: Hydra's `.hydra/` and `run.log` go to X too, not to a new dated
folder under outputs/; a rerun into X keeps the first `.hydra/` snapshot and appends to the log."""
from __future__ import annotations

import json

import pytest

from helpers_engine import run_py

pytestmark = pytest.mark.slow  # two run.py processes (~40 s on a busy 2-core machine)


def test_run_dir_holds_hydra_files_and_the_log(tmp_path):
    run_dir = tmp_path / "mine"
    r = run_py(tmp_path, f"run_dir={run_dir}", "data.limit=2", "logger=none")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run_dir / "status.json").read_text()) == {"status": "ok"}
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "results.csv").is_file()
    overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert "data.limit=2" in overrides
    log = (run_dir / "run.log").read_text()
    assert "results in" in log
    assert not (tmp_path / "outputs").exists()           # nothing went to a dated folder

    r = run_py(tmp_path, f"run_dir={run_dir}", "data.limit=3", "logger=none")   # extend the run
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == overrides   # the first snapshot stays
    again = (run_dir / "run.log").read_text()
    assert again.startswith(log) and len(again) > len(log)
    assert not (tmp_path / "outputs").exists()
