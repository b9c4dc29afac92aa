"""Sweeps through hydra-submitit-launcher: `hydra/launcher=local_jobs` runs every sweep point as its own process
(submitit's local executor, the path a SLURM sweep takes), `hydra/launcher=slurm` writes the sbatch script.

What is checked: a two-job local_jobs sweep writes both jobs' results into the usual flat job folders, each
solved in a process of its own (the solve log records the pid); a sweep where one job is bad records that
job's failure in its folder, keeps the other job's results and ends with exit 1 listing the failed job (the
failure comes back from another process: invlab/cli/sweeps.py); the failure file's lines reach the sweep's
list once, also when the basic launcher had listed them already; and the slurm launcher's documented settings
(partition, GPUs per node, CPUs, memory, time limit, array parallelism) reach the sbatch script that submitit
writes for a three-job array.
"""
from __future__ import annotations

import csv
import json

import pytest

from helpers_engine import REPO, run_py

pytestmark = pytest.mark.filterwarnings("ignore")
LOCAL = ["hydra/launcher=local_jobs"]


def job_dirs(sweep):
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


def status(job):
    return json.loads((job / "status.json").read_text())["status"]


@pytest.mark.slow
def test_local_jobs_sweep_runs_each_point_in_its_own_process(tmp_path):
    sweep, log = tmp_path / "multirun", tmp_path / "solved.log"
    out = run_py(tmp_path, "-m", *LOCAL, "solver=tiny,tiny_long", "data.n=3", f"hydra.sweep.dir={sweep}",
                 env={"INVLAB_TEST_SOLVE_LOG": str(log)})
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == ["0_tiny_tiny_tiny", "1_tiny_long_tiny_tiny"]  # flat, named as before
    for j in jobs:
        assert status(j) == "ok"
        with open(j / "results.csv") as f:
            assert [int(r["index"]) for r in csv.DictReader(f)] == [0, 1, 2]
    # tiny_long runs 4 denoiser steps instead of 2: different results prove each job got its own overrides
    psnr = [json.loads((j / "summary.json").read_text())["metrics"]["psnr"]["mean"] for j in jobs]
    assert psnr[0] != psnr[1]
    pids = [int(line.split()[1]) for line in log.read_text().splitlines()]
    assert len(pids) == 6 and len(set(pids)) == 2  # 2 jobs × 3 samples, one process per job


@pytest.mark.slow
def test_local_jobs_sweep_reports_a_bad_job_and_keeps_the_other(tmp_path):
    sweep = tmp_path / "multirun"
    out = run_py(tmp_path, "-m", *LOCAL, "prior=tiny,tiny_missing", "data.n=2", f"hydra.sweep.dir={sweep}")
    assert out.returncode == 1, out.stderr[-3000:]
    good, bad = job_dirs(sweep)
    assert (good.name, bad.name) == ("0_tiny_tiny_tiny", "1_tiny_tiny_tiny_missing")
    assert status(good) == "ok" and (good / "results.csv").exists()
    assert status(bad) == "failed" and not (bad / "results.csv").exists()
    assert "1 job(s) of the sweep failed" in out.stderr
    assert f"{bad}: could not build prior=tiny_missing: file not found" in out.stderr
    assert str(good) not in out.stderr


def test_failure_file_lines_join_the_sweep_list_once(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from invlab.cli import jobs
    from invlab.cli.sweeps import FAILURES_FILE, SweepReport

    monkeypatch.setattr(jobs, "FAILED_JOBS", ["/s/0_a: listed in this process."])
    (tmp_path / FAILURES_FILE).write_text("/s/0_a: listed in this process.\n/s/1_b: failed elsewhere.\n")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    SweepReport().on_multirun_end(config)
    assert jobs.FAILED_JOBS == ["/s/0_a: listed in this process.", "/s/1_b: failed elsewhere."]
    SweepReport().on_multirun_start(config)  # a new sweep into the same dir starts from no failures
    assert not (tmp_path / FAILURES_FILE).exists()


def test_slurm_settings_reach_the_sbatch_script(tmp_path):
    """The launcher hands its settings to submitit (generic names renamed by submitit's SlurmExecutor table, the
    rest as sbatch options); the script submitit would submit for a 3-job array carries each of them."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import SlurmExecutor, _convert_mem, _make_sbatch_string

    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=2",
                 "hydra.launcher.cpus_per_task=6", "hydra.launcher.mem_gb=48", "hydra.launcher.timeout_min=90",
                 "hydra.launcher.array_parallelism=2", "hydra.launcher.account=lab"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"].endswith("SlurmLauncher")
    rename = SlurmExecutor._equivalence_dict()
    params = {rename.get(k, k): v for k, v in launcher.items()
              if k not in ("_target_", "submitit_folder", "max_num_timeout") and v is not None}
    params["job_name"] = "run"  # ${hydra.job.name}, set at launch
    params["mem"] = _convert_mem(params["mem"])
    script = _make_sbatch_string(command="python -u -m submitit.core._submit x", folder=tmp_path / "%j",
                                 map_count=3, **params)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=6",
                 "#SBATCH --mem=48GB", "#SBATCH --time=90", "#SBATCH --array=0-2%2", "#SBATCH --account=lab",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --nodes=1"):
        assert line in script, script
