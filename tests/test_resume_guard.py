"""Resuming into a run directory: what is refused leaves the directory untouched (issue 16, 9c and 9d).

What is checked, in-process on the stand-ins of helpers_engine with data=folder: every results row names
its source file; after a file is inserted into the folder (shifting every later index) a resume is refused
in one sentence that names the sample and both files, and solves nothing; files appended after the last
one extend the run; a resume refused for other settings keeps the finished run's status.json (`ok`) and
writes no error.txt, through the same `run_job` the CLI uses.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from helpers_engine import compose

pytestmark = pytest.mark.filterwarnings("ignore")


def write_images(folder, names):
    folder.mkdir(exist_ok=True)
    for name in names:
        seed = sum(map(ord, name))  # each file its own content
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / name)


def folder_cfg(tmp_path, run_dir, images, log):
    return compose(tmp_path / "conf", run_dir, "data=folder", f"data.path={images}", "data.size=16",
                   f"solver.log_path={log}", "batch_size=1")


def solved(log):
    return [int(line.split()[0]) for line in log.read_text().splitlines()] if log.exists() else []


def test_folder_resume_after_files_were_inserted_is_refused(tmp_path):
    from invlab.cli.run import experiment
    from invlab.errors import RunDirError

    images, run_dir, log = tmp_path / "images", tmp_path / "run", tmp_path / "solved.log"
    write_images(images, ["a.png", "c.png"])
    experiment(folder_cfg(tmp_path, run_dir, images, log))
    with open(run_dir / "results.csv") as f:
        assert [(r["index"], r["source"]) for r in csv.DictReader(f)] == [("0", "a.png"), ("1", "c.png")]
    before = {p.name: p.read_bytes() for p in (run_dir / "samples").iterdir()}

    write_images(images, ["b.png"])  # sorts between a and c: c.png is now sample 2
    log.unlink()
    with pytest.raises(RunDirError, match=r"sample 1 made from 'c.png'.*'b.png'"):
        experiment(folder_cfg(tmp_path, run_dir, images, log))
    assert solved(log) == []
    assert {p.name: p.read_bytes() for p in (run_dir / "samples").iterdir()} == before

    (images / "b.png").unlink()
    write_images(images, ["d.png"])  # appended after the last file: the finished samples still match
    summary = experiment(folder_cfg(tmp_path, run_dir, images, log))
    assert solved(log) == [2] and summary["counts"] == {"ok": 3}
    with open(run_dir / "results.csv") as f:
        assert [r["source"] for r in csv.DictReader(f)] == ["a.png", "c.png", "d.png"]


def test_a_refused_resume_writes_nothing_into_the_run_dir(tmp_path, capsys):
    from invlab.cli.jobs import run_job
    from invlab.cli.run import experiment

    run_dir = tmp_path / "run"
    assert run_job(experiment, compose(tmp_path / "conf", run_dir, "data.n=2"))["counts"] == {"ok": 2}
    assert json.loads((run_dir / "status.json").read_text()) == {"status": "ok"}
    files = {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}

    with pytest.raises(SystemExit) as exit_info:  # other settings, same directory: refused
        run_job(experiment, compose(tmp_path / "conf", run_dir, "data.n=2", "task=tiny_strong"))
    assert exit_info.value.code == 1
    assert "already holds results made with different task settings" in capsys.readouterr().err
    assert json.loads((run_dir / "status.json").read_text()) == {"status": "ok"}
    assert not (run_dir / "error.txt").exists()
    assert {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == files


def test_a_failure_in_a_usable_run_dir_is_still_recorded(tmp_path):
    """The other side: a run dir that was not refused gets `failed` and error.txt as before."""
    from invlab.cli.jobs import run_job
    from invlab.cli.run import experiment

    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit):
        run_job(experiment, compose(tmp_path / "conf", run_dir, "prior=tiny_missing"))
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    assert (run_dir / "error.txt").exists()


@pytest.mark.slow
def test_cli_refused_resume_keeps_the_finished_run(tmp_path):
    """As a user runs it: Hydra's own files follow run_dir (cli/jobs.follow_run_dir), and still the refused
    rerun leaves status.json, .hydra/ and the results of the finished run as they were."""
    from helpers_engine import run_py

    run_dir = tmp_path / "run"
    assert run_py(tmp_path, "data.n=1", f"run_dir={run_dir}").returncode == 0
    kept = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*")
            if p.is_file() and p.suffix != ".log"}
    out = run_py(tmp_path, "data.n=1", "task=tiny_strong", f"run_dir={run_dir}")
    assert out.returncode == 1 and "different task settings" in out.stderr and "Traceback" not in out.stderr
    assert {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*")
            if p.is_file() and p.suffix != ".log"} == kept
