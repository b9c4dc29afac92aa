"""Hyperparameter search with hydra-optuna-sweeper (`python run.py -m hparams_search=<solver>_<task>`) and
`scripts/tune.py`, which writes the best point as conf/tuned/<solver>_<task>.yaml.

What is checked: every shipped conf/hparams_search config composes with a validation split (a `*_val` data
choice; none names a test split), an Optuna sweeper and searched parameters; a search asked to run on a test
split is refused before any trial (one sentence, exit 1); the objective is the mean over all samples and a
trial with a diverged sample fails (None) rather than scoring its survivors; and a 4-trial search on the tiny
stand-ins, one of whose trials is a failing job (a missing prior file), records that trial as failed, goes on,
lists it at the end (exit 1), and returns each other trial's mean PSNR from summary.json to Optuna (its recorded
best equals the best summary, computed here from the trial folders), after which tune.py writes a tuned file whose header names the
data, the trial count and the best and runner-up values, and which, loaded as conf/tuned/<solver>_<task>.yaml,
sets the best trial's values.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from helpers_engine import REPO, cli_env, compose, run_py, write_conf

pytestmark = pytest.mark.filterwarnings("ignore")
SEARCHES = sorted(p.stem for p in (REPO / "conf" / "hparams_search").glob("*.yaml"))
TINY_SEARCH = """# @package _global_
defaults:
  - override /hydra/sweeper: optuna
objective: psnr
hydra:
  sweeper:
    direction: maximize
    study_name: tiny
    n_trials: 4
    n_jobs: 1
    max_failure_rate: 1.0
    sampler:
      seed: 4               # draws prior=tiny for trials 0-2 and tiny_missing (a failing job) for trial 3
    params:
      solver.iters: range(1, 6)
      task.sigma: interval(0.05, 0.2)
      prior: choice(tiny, tiny_missing)
"""


def compose_repo(*overrides: str):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=True)


def test_the_required_searches_exist():
    assert {"pnp_admm_deblur", "diffpir_deblur", "dpnp_deblur"} <= set(SEARCHES)


@pytest.mark.parametrize("name", SEARCHES)
def test_every_search_tunes_on_a_validation_split(name):
    from invlab.cli.sweeps import is_test_data

    cfg = compose_repo(f"hparams_search={name}")
    data = str(cfg.data.name)
    assert not is_test_data(data) and data.endswith("_val"), f"hparams_search={name} tunes on data={data}"
    # named <solver>_<task>[_<variant>] (a task may hold "_": inpaint_box; a variant: pnp_admm_deblur_mnist)
    solver, task = str(cfg.solver.name), str(cfg.task.name)
    assert name == f"{solver}_{task}" or name.startswith(f"{solver}_{task}_"), (name, solver, task)
    assert cfg.objective in ("psnr", "psnr_aligned") and "optuna" in cfg.hydra.sweeper._target_.lower()
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.hydra.sweeper.params
    for key in cfg.hydra.sweeper.params:  # every searched key exists in the composed config
        assert OmegaConf.select(cfg, key) is not None, f"{name} searches {key}, which the config does not have"


def test_the_mnist_searches_pin_the_validation_digits():
    """The MNIST searches (conf/data/mnist_val) tune on mnist_test 500-509, digits no table uses (the tables use
    the first 50: experiment=diffusion/table, mnist_test8), whatever the solver's own data default is."""
    datas = {n: compose_repo(f"hparams_search={n}").data for n in SEARCHES}
    mnist = {n: d for n, d in datas.items() if str(d.get("_target_", "")).endswith(".mnist")}
    assert len(mnist) >= 10, sorted(mnist)
    for name, data in mnist.items():
        assert (str(data.name), int(data.start), int(data.limit)) == ("mnist_val", 500, 10), name


def test_the_hand_written_sweeps_are_gone():
    assert not (REPO / "experiments" / "diffusion" / "sweeps.sh").exists()


def test_a_search_on_a_test_split_is_refused(capsys):
    from invlab.cli.sweeps import SweepReport

    cfg = compose_repo("hparams_search=diffpir_deblur", "data=mnist_test")
    with pytest.raises(SystemExit) as stop:
        SweepReport().on_multirun_start(cfg)
    assert stop.value.code == 1
    assert "data=mnist_test is a test split" in capsys.readouterr().err
    cfg = compose_repo("hparams_search=pnp_admm_video_sr4", "data=face_clips")  # one config, a split field
    with pytest.raises(SystemExit) as stop:
        SweepReport().on_multirun_start(cfg)
    assert stop.value.code == 1 and "has split=test; set data.split=val" in capsys.readouterr().err


def test_objective_is_the_mean_over_all_samples():
    from invlab.cli.sweeps import objective_value

    summary = {"samples": 3, "metrics": {"psnr": {"mean": 20.0, "n": 3}}}
    assert objective_value(summary, "psnr") == 20.0
    assert objective_value({"samples": 3, "metrics": {"psnr": {"mean": 30.0, "n": 2}}}, "psnr") is None  # failed
    assert objective_value(None, "psnr") is None  # a DDP rank other than 0


@pytest.mark.slow
def test_four_trial_search_then_tune(tmp_path):
    conf = tmp_path / "conf"
    write_conf(conf)
    (conf / "hparams_search").mkdir()
    (conf / "hparams_search" / "tiny_tiny.yaml").write_text(TINY_SEARCH)
    sweep = tmp_path / "multirun"
    out = run_py(tmp_path, "-m", "hparams_search=tiny_tiny", "data.n=3", f"hydra.sweep.dir={sweep}")
    assert out.returncode == 1, out.stderr[-3000:]  # the search ran through; its failed trial is listed
    assert "1 job(s) of the sweep failed" in out.stderr and "3_tiny_tiny_tiny_missing" in out.stderr

    trials, failed = {}, []
    for job in sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")):
        given = dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
        if given["prior"] == "tiny_missing":
            assert json.loads((job / "status.json").read_text())["status"] == "failed"
            failed.append(job.name)
            continue
        mean = json.loads((job / "summary.json").read_text())["metrics"]["psnr"]["mean"]
        trials[job.name] = (int(given["solver.iters"]), float(given["task.sigma"]), mean)
    assert len(trials) == 3 and failed == ["3_tiny_tiny_tiny_missing"]
    ranked = sorted(trials.items(), key=lambda kv: -kv[1][2])
    (best_job, (iters, sigma, best)), (_, (_, _, runner_up)) = ranked[0], ranked[1]
    told = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert told["best_value"] == pytest.approx(best, abs=1e-9)  # the job returned its summary's mean
    assert told["best_params"] == {"solver.iters": iters, "task.sigma": pytest.approx(sigma), "prior": "tiny"}

    tuned = conf / "tuned" / "tiny_tiny.yaml"
    env = cli_env(tmp_path)
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "tune.py"), str(sweep), "--out", str(tuned)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    text = tuned.read_text()
    header = " ".join(line for line in text.splitlines() if line.startswith("#"))
    assert text.startswith("# @package _global_\n")
    assert "data=tiny" in header and "4 trials (3 complete, 1 failed)" in header
    assert f"Best {best:.2f}" in header and f"runner-up {runner_up:.2f}" in header and best_job in header
    cfg = compose(conf, tmp_path / "r")  # the tuned file applies to tiny × tiny like any conf/tuned file
    assert cfg.solver.iters == iters and cfg.task.sigma == pytest.approx(sigma)
    assert "also chose prior=tiny" in header and "prior" not in yaml.safe_load(text)  # a group is no value
