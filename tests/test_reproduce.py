"""`python reproduce.py paper=<name>`: every paper config composes at every scale (and each run.py stage's
arguments compose against run.py's config), one paper runs end to end at scale=smoke and writes its table and
figure, a rerun skips the finished stages, and a failing stage is reported without losing the others."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from invlab.cli.reproduce import (finished, launcher_args, merge_overrides, runs_on, stage_argv, table_file,
                                  write_marker)

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
PAPERS = sorted(p.stem for p in (CONF / "paper").glob("*.yaml"))
FIXTURES = REPO / "tests" / "fixtures" / "reproduce"
# A paper at scale=paper may need what only its user has (the FFHQ checkpoint and images).
NEEDS = {"diffusion": ["paper.checkpoint=/ckpt/ffhq_10m.pt", "paper.data_path=/data/ffhq"]}


def compose(config: str, overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config, overrides=overrides)


def first_point(args: list[str]) -> list[str]:
    """A sweep's first job: `-m` and hydra.* dropped, each swept `key=a,b` as `key=a`."""
    out = []
    for a in args:
        if a == "-m" or a.startswith("hydra."):
            continue
        key, eq, value = a.partition("=")
        out.append(f"{key}={value.split(',')[0]}" if eq and "[" not in value else a)
    return out


def reproduce(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "reproduce.py", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_papers_are_the_experiment_folders():
    assert PAPERS, "no conf/paper/*.yaml"
    for name in PAPERS:
        assert (REPO / "experiments" / name).is_dir(), f"conf/paper/{name}.yaml names no experiments/ folder"
        scripts = sorted(p.name for p in (REPO / "experiments" / name).glob("*.sh"))
        assert not scripts, f"experiments/{name}/{scripts}: make them stages of conf/paper/{name}.yaml (reproduce.py)"
        assert f"reproduce.py paper={name}" in (REPO / "experiments" / name / "README.md").read_text()


@pytest.mark.parametrize("name", PAPERS)
def test_paper_composes_at_every_scale(name, tmp_path):
    cfg = compose("reproduce", [f"paper={name}", *NEEDS.get(name, [])])
    paper = cfg.paper
    assert paper.name == name and set(paper.scales) >= {"cpu", "paper", "smoke"}
    for scale in paper.scales:
        stages = [s for s in paper.stages if runs_on(paper, s, scale)]
        assert stages, f"{name} has no stage at scale={scale}"
        for stage in stages:
            assert set(paper.stages[stage].get("needs") or []) <= set(paper.stages), f"{name}.{stage}: needs"
            for key, value in (paper.stages[stage].get("scale") or {}).items():  # `{smoke: a=1,2}` splits at the comma
                assert key in paper.scales and isinstance(value, str), f"{name}.{stage}.scale.{key}: {value!r}"
            argv = stage_argv(paper, stage, scale, tmp_path)
            assert (REPO / argv[0]).is_file(), f"{name}.{stage}: no script {argv[0]}"
            assert str(tmp_path / stage) in " ".join(argv) or "{dir}" not in str(paper.stages[stage].cmd)
            if argv[0] == "run.py":  # its arguments compose against run.py's own config
                job = compose("config", first_point(argv[1:]))
                assert job.solver.name and job.task.name


def test_table_file_per_scale():
    """A paper whose README table is its `full` scale keeps it in table.md; its under-an-hour cpu scale writes beside it."""
    for name in ("diffusion", "eigenscore"):
        paper = compose("reproduce", [f"paper={name}", *NEEDS.get(name, [])]).paper
        assert "full" in paper.scales and table_file(paper, "full") == "table.md"
        assert table_file(paper, "cpu") == "table_cpu.md"
    apnp = compose("reproduce", ["paper=apnp"]).paper
    assert table_file(apnp, "cpu") == table_file(apnp, "paper") == "table.md"
    bad = OmegaConf.create({"name": "x", "table_files": {"cpu": "../table.md"}})
    with pytest.raises(ValueError, match="table_files.cpu must be a file name ending in .md"):
        table_file(bad, "cpu")


def test_merge_overrides_later_wins():
    assert merge_overrides(["run.py", "-m", "solver.iters=30,100", "task=a", "solver.iters=2"]) == \
        ["run.py", "-m", "solver.iters=2", "task=a"]
    script = ["curves.py", "--data-set", "size=128", "limit=4", "--data-set", "size=32", "limit=1"]
    assert merge_overrides(script) == script  # argparse: the last --data-set wins by itself


def test_bad_paper_and_scale_are_one_clear_error(tmp_path):
    res = reproduce("paper=nope", f"out={tmp_path}")
    assert res.returncode != 0 and "paper/nope" in res.stderr and "apnp" in res.stderr
    res = reproduce("paper=apnp", "scale=huge", f"out={tmp_path}")
    assert res.returncode == 1 and "scale=huge is not a scale of paper=apnp (choices: cpu, paper, smoke)" in res.stderr


def test_smoke_end_to_end_then_rerun_skips(tmp_path):
    """bcpnp at scale=smoke: the sweep (3 modes × 2 tasks, 1 image, 2 iterations) and the kernel table."""
    res = reproduce("paper=bcpnp", "scale=smoke", f"out={tmp_path}")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    table = (tmp_path / "table.md").read_text()
    for mode in ("blind", "fixed", "oracle"):
        for task in ("deblur", "deblur_motion"):
            assert f"| test | bcpnp {mode} | {task} | " in table
    assert "scale=smoke" in table and (tmp_path / "table.png").stat().st_size > 1000
    assert json.loads((tmp_path / "test" / ".reproduce.json").read_text())["status"] == "ok"
    assert not (REPO / "experiments" / "bcpnp" / "table.md").exists() or "scale=smoke" not in \
        (REPO / "experiments" / "bcpnp" / "table.md").read_text()
    again = reproduce("paper=bcpnp", "scale=smoke", f"out={tmp_path}")
    assert again.returncode == 0
    assert "test: done already" in again.stdout and "kernel_table: done already" in again.stdout
    assert (tmp_path / "table.md").read_text().split("\n", 4)[4] == table.split("\n", 4)[4]


def test_failing_stage_is_reported_and_the_others_run(tmp_path):
    res = reproduce("paper=broken", f"hydra.searchpath=[file://{FIXTURES}]", f"out={tmp_path}",
                    f"table_dir={tmp_path}")
    assert res.returncode == 1
    assert "2 of 3 stage(s) of paper=broken did not finish" in res.stderr
    assert "bad: failed (exit 1)" in res.stderr and "after_bad: skipped: needs bad" in res.stderr
    assert json.loads((tmp_path / "good" / "status.json").read_text())["status"] == "ok"
    table = (tmp_path / "table.md").read_text()
    assert "| good | pnp_admm | deblur | " in table
    assert "solver.iters" in (tmp_path / "bad" / "reproduce.log").read_text()
    again = reproduce("paper=broken", f"hydra.searchpath=[file://{FIXTURES}]", f"out={tmp_path}",
                      f"table_dir={tmp_path}")
    assert again.returncode == 1 and "good: done already" in again.stdout and "[reproduce] bad: python" in again.stdout


def test_a_stage_runs_again_when_a_stage_it_needs_finished_after_it(tmp_path):
    """A table stage over sweeps that were rerun (new samples, a failed job redone) is stale: not skipped."""
    sweep, table = tmp_path / "sweep", tmp_path / "table"
    write_marker(sweep, ["run.py", "-m"], "ok", 1.0)
    write_marker(table, ["make_table.py"], "ok", 1.0)
    assert finished(table, ["make_table.py"], [sweep])
    assert not finished(table, ["make_table.py", "--other"], [sweep])  # another command
    write_marker(sweep, ["run.py", "-m"], "ok", 1.0)  # the sweep finished again, after the table
    assert finished(sweep, ["run.py", "-m"]) and not finished(table, ["make_table.py"], [sweep])
    write_marker(table, ["make_table.py"], "ok", 1.0)
    assert finished(table, ["make_table.py"], [sweep, tmp_path / "never_ran"])


def test_launcher_choice_goes_to_multirun_stages_only(tmp_path):
    """`hydra/launcher=...` and `hydra.launcher.*` given to reproduce.py are passed on to run.py -m sweeps."""
    given = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.run.dir=x"]
    paper = compose("reproduce", ["paper=oder"]).paper
    sweep = stage_argv(paper, "test", "cpu", tmp_path)
    assert launcher_args(given, sweep) == ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]
    assert launcher_args(given, stage_argv(paper, "time_step", "cpu", tmp_path)) == []
    assert sweep[-1] == f"hydra.sweep.dir={tmp_path / 'test'}"


def test_table_puts_published_numbers_beside_ours(tmp_path):
    """A job whose config carries `paper.rows.<task>.published` (the FFHQ paper configs) and a paper's own
    `published:` list both give the paper column and Δ; seeds of one row are pooled (population std, n)."""
    from invlab.cli import paper_table

    def job(stage: str, name: str, task: str, mean: float, std: float, n: int, published=None):
        d = tmp_path / stage / name
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"solver": "dps", "task": task, "prior": "adm_ffhq", "samples": n,
                                                    "counts": {"ok": n}, "metrics": {"psnr": {"mean": mean, "std": std, "n": n}}}))
        (d / "status.json").write_text('{"status": "ok"}')
        rows = {task: {"published": published}} if published else {}
        OmegaConf.save(OmegaConf.create({"paper": {"source": "Table 1", "rows": rows}}), d / "config.yaml")

    job("ffhq", "0_dps", "sr4_bicubic", 25.0, 1.0, 2, {"psnr": 25.67})
    job("mnist", "0_dps", "deblur", 20.0, 0.0, 1)
    job("mnist", "1_dps", "deblur", 22.0, 0.0, 1)
    paper = OmegaConf.create({"title": "T", "table": {"metric": "psnr", "label": "PSNR (dB)"},
                              "published": [{"method": "dps", "task": "deblur", "value": 21.5, "source": "README"}],
                              "stages": {"ffhq": {"cmd": "run.py -m"}, "mnist": {"cmd": "run.py -m"}}})
    rows = paper_table.collect(paper, tmp_path, ["ffhq", "mnist"])
    text = paper_table.markdown(paper, rows, "paper", "python reproduce.py paper=t")
    assert "| ffhq | dps | sr4_bicubic | 25.00 ± 1.00 | 2 | 25.67 [1] | -0.67 |" in text
    assert "| mnist | dps | deblur | 21.00 ± 1.00 | 2 | 21.50 [2] | -0.50 |" in text
    assert "[1] Table 1" in text and "[2] README" in text
    paper_table.figure(paper, rows, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000


@pytest.mark.slow  # ten run.py processes on 2 clips (~2 min here): make test-all
def test_flair_smoke_table_has_the_per_frame_tv_rows(tmp_path):
    """paper=flair at scale=smoke: the FLAIR, per-frame DPM and per-frame TV runs, then make_table's detailed
    table (TV rows and paired differences for SR and deblurring, none for interpolation) and the strips."""
    res = reproduce("paper=flair", "scale=smoke", f"out={tmp_path}", timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    video = (tmp_path / "make_table" / "table_video.md").read_text()
    from PIL import Image

    rows = {t: Image.open(tmp_path / "make_table" / f"frames_{t}.png").height for t in
            ("video_sr4", "video_deblur", "video_interp")}
    for task in ("video_sr4", "video_deblur"):  # its row in the table and in the paired FLAIR − differences
        assert video.count(f"| {task} | per-frame TV (PnP-ADMM) | ") == 2, video
        assert rows[task] > rows["video_interp"]  # the strip has a TV row: truth | baseline | TV | DPM | FLAIR
    assert "| video_interp | per-frame TV" not in video
    assert "| video_sr4_tv | per-frame TV (pnp_admm) | video_sr4 | " in (tmp_path / "table.md").read_text()
