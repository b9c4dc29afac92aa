"""An unknown `experiment=` is an error naming the choices (it is an `optional` defaults entry, which Hydra
would skip without a word and run the defaults)."""
from __future__ import annotations

import subprocess
import sys

from helpers_engine import REPO, cli_env, run_py


def test_run_py_refuses_an_unknown_experiment(tmp_path):
    r = run_py(tmp_path, "experiment=tiny_engnie", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 1, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: experiment=tiny_engnie matches no config") and "tiny_engine" in last
    assert "Traceback" not in r.stderr and not (tmp_path / "run" / "results.csv").exists()


def test_train_py_refuses_an_unknown_recipe_and_suggests_the_right_one(tmp_path):
    for name, hint in (("train/nonexistent", "."), ("dncnn_gray", "did you mean experiment=train/dncnn_gray?")):
        r = subprocess.run([sys.executable, str(REPO / "train.py"), f"experiment={name}", "logger=none",
                            f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=cli_env(tmp_path),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1, r.stderr[-2000:]
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: experiment={name} matches no config") and "train/ddpm_mnist" in last
        assert last.endswith(hint) and "Traceback" not in r.stderr
        assert not (tmp_path / "run" / "checkpoints").exists()   # nothing was trained
