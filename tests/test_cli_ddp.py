"""`strategy=ddp` on CPU with two processes: Lightning re-runs run.py for rank 1 (Hydra-aware), both
ranks must work in the same run dir, split the samples without padding, and rank 0 must merge them.

What is checked: every index is solved exactly once over both ranks (the solve log records index and
process id), both processes took part, results.csv holds each index once, and a resume in which
fewer samples remain than ranks (one rank idle) solves just the missing one and still finishes (slow),
and DDP inside a Hydra sweep runs each job once, in its own directory (slow).
"""
from __future__ import annotations

import csv

import pytest

from helpers_engine import run_py

pytestmark = pytest.mark.filterwarnings("ignore")
DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]


def solved(log):
    return [tuple(map(int, line.split())) for line in log.read_text().splitlines()]


def ddp_run(tmp_path, n=5):
    run_dir, log = tmp_path / "ddp", tmp_path / "solved.log"
    args = [*DDP, f"data.n={n}", "batch_size=2", f"solver.log_path={log}", f"hydra.run.dir={run_dir}"]
    out = run_py(tmp_path, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(run_dir / "results.csv") as f:
        assert [int(r["index"]) for r in csv.DictReader(f)] == list(range(n))
    return run_dir, log


def test_ddp_two_cpu_processes_each_sample_once(tmp_path):
    _, log = ddp_run(tmp_path)
    pairs = solved(log)
    assert sorted(i for i, _ in pairs) == [0, 1, 2, 3, 4]  # each exactly once: no padding duplicates
    assert len({pid for _, pid in pairs}) == 2


@pytest.mark.slow
def test_ddp_resume_with_an_idle_rank(tmp_path):
    run_dir, log = ddp_run(tmp_path)
    (run_dir / "samples" / "00003.json").unlink()
    log.unlink()
    ddp_run(tmp_path)  # one sample left for two ranks: rank 1 gets only padding, nothing hangs
    assert [i for i, _ in solved(log)] == [3]


@pytest.mark.slow
def test_ddp_inside_a_sweep(tmp_path):
    """Each job of a multirun relaunches its own rank 1 for just that job, in that job's directory,
    and the next job does not reuse the previous job's process group."""
    log, sweep = tmp_path / "solved.log", tmp_path / "multirun"
    out = run_py(tmp_path, "-m", *DDP, "solver=tiny,tiny_long", "data.n=3", f"hydra.sweep.dir={sweep}",
                 env={"INVLAB_TEST_SOLVE_LOG": str(log)})
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2 and all((j / "results.csv").exists() for j in jobs)
    pairs = solved(log)
    assert sorted(i for i, _ in pairs) == [0, 0, 1, 1, 2, 2]  # 2 jobs × 3 samples, once each
    assert len({pid for _, pid in pairs}) == 3  # the sweep's process is rank 0 of both; two rank-1 children
