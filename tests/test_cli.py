"""`python run.py` as a user runs it (subprocesses), on the stand-ins of helpers_engine.

What is checked: a single run with the default W&B logger (offline) writes every output under the Hydra
run dir; user errors print one `error:` sentence and no traceback, fast; an unknown solver gets Hydra's
list of valid names; a sweep with failing jobs runs every job, records the failures and exits 1;
make_table turns the sweep into a Markdown/CSV table; a sweep over paths (values with '/') gives one
flat folder per job.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from helpers_engine import REPO, run_py

pytestmark = pytest.mark.filterwarnings("ignore")


def test_single_run_default_wandb_logger(tmp_path):
    run_dir = tmp_path / "outputs" / "one"
    out = run_py(tmp_path, "logger=wandb", "data.n=2", f"hydra.run.dir={run_dir}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "PSNR" in out.stdout + out.stderr  # the console summary
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "results.csv", "summary.json", "grid.png", "status.json", "samples"} <= names
    with open(run_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["index"] for r in rows] == ["0", "1"] and {r["status"] for r in rows} == {"ok"}
    assert {"psnr", "ssim", "psnr_input", "ssim_input", "nfe", "seconds"} <= set(rows[0])
    assert json.loads((run_dir / "status.json").read_text()) == {"status": "ok"}
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    assert list(offline[0].rglob("media/images/grid*.png"))


def assert_one_sentence(out, *fragments):
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for frag in fragments:
        assert frag in lines[0]
    assert out.seconds < 30  # fails before lightning is imported or anything is solved


def test_missing_checkpoint_is_one_sentence(tmp_path):
    out = run_py(tmp_path, "prior=tiny_missing", f"run_dir={tmp_path / 'r'}")
    assert_one_sentence(out, "/nonexistent/invlab/tiny.pt", "prior")
    assert json.loads((tmp_path / "r" / "status.json").read_text())["status"] == "failed"


def test_channel_mismatch_is_one_sentence(tmp_path):
    out = run_py(tmp_path, "data=tiny_rgb", f"run_dir={tmp_path / 'r'}")
    assert_one_sentence(out, "1-channel", "3 channels")


def test_unknown_solver_lists_the_valid_ones(tmp_path):
    out = run_py(tmp_path, "solver=foo")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    valid = {p.stem for p in (REPO / "conf" / "solver").glob("*.yaml")} | {"tiny", "tiny_long"}
    for name in valid:
        assert name in out.stderr


def test_sweep_with_failures_then_make_table(tmp_path):
    sweep = tmp_path / "multirun"
    out = run_py(tmp_path, "-m", "solver=tiny,tiny_long", "prior=tiny,tiny_missing", "data.n=2",
                 f"hydra.sweep.dir={sweep}")
    assert out.returncode == 1, out.stderr[-3000:]  # the sweep ran through, then reported failures
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 4
    status = {j.name: json.loads((j / "status.json").read_text())["status"] for j in jobs}
    assert sorted(status.values()) == ["failed", "failed", "ok", "ok"]
    for j in jobs:
        assert (j / "summary.json").exists() == (status[j.name] == "ok")
        assert (j / "error.txt").exists() == (status[j.name] == "failed")
    assert "2 job(s) of the sweep failed" in out.stderr

    table = subprocess.run([sys.executable, str(REPO / "scripts" / "make_table.py"), str(sweep),
                            "--csv", str(tmp_path / "t.csv")], capture_output=True, text=True, check=True)
    lines = table.stdout.strip().splitlines()
    assert lines[0].split("|")[1:-1] == [" solver ", " task ", " prior ", " PSNR ", " SSIM ", " NFE ",
                                         " seconds ", " samples "]
    assert len(lines) == 2 + 4
    assert sum("±" in line for line in lines) == 2 and sum("failed" in line for line in lines) == 2
    with open(tmp_path / "t.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["solver"], r["prior"]) for r in rows] == [("tiny", "tiny"), ("tiny", "tiny_missing"),
                                                        ("tiny_long", "tiny"), ("tiny_long", "tiny_missing")]
    assert float(rows[0]["nfe_mean"]) == 2 and float(rows[2]["nfe_mean"]) == 4


def test_sweep_over_paths_gives_flat_job_folders(tmp_path):
    """Swept values holding '/' (checkpoint paths) must not nest job folders (conf/hydra/default.yaml)."""
    ckpts = [tmp_path / "ckpt" / "a.pt", tmp_path / "ckpt" / "sub" / "b.pt"]
    for path in ckpts:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    sweep = tmp_path / "multirun"
    out = run_py(tmp_path, "-m", "prior=tiny_missing", f"prior.checkpoint={ckpts[0]},{ckpts[1]}", "data.n=1",
                 f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [j.name for j in jobs] == ["0_tiny_tiny_tiny_missing", "1_tiny_tiny_tiny_missing"]
    for j in jobs:
        assert json.loads((j / "status.json").read_text()) == {"status": "ok"}

    table = subprocess.run([sys.executable, str(REPO / "scripts" / "make_table.py"), str(sweep),
                            "--csv", str(tmp_path / "t.csv")], capture_output=True, text=True, check=True)
    with open(tmp_path / "t.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["prior.checkpoint"] for r in rows) == sorted(map(str, ckpts)), table.stdout
