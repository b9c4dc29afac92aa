"""The reconstruction engine in-process (one lightning import for the whole file), on stand-ins.

What is checked: the run directory's outputs and their columns, divergence handling, resume (only
unfinished samples are solved, finished files untouched), the fingerprint guard, the CSV/none
loggers, and the small pieces (store, images, summary) on their own.
"""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from helpers_engine import REPO, compose

pytestmark = pytest.mark.filterwarnings("ignore")

COLUMNS = ["index", "psnr", "ssim", "psnr_input", "ssim_input", "nfe", "seconds", "status"]


def run(tmp_path, run_dir, *overrides):
    from invlab.cli.run import experiment

    return experiment(compose(tmp_path / "conf", run_dir, *overrides))


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def solved(log_path):
    return [int(line.split()[0]) for line in log_path.read_text().splitlines()] if log_path.exists() else []


def test_outputs_columns_and_divergence(tmp_path):
    run_dir = tmp_path / "run"
    summary = run(tmp_path, run_dir, "solver.nan_indices=[1]", "save_tensors=true", "grid_max=3")
    rows = read_csv(run_dir / "results.csv")
    assert set(COLUMNS) <= set(rows[0])
    assert [int(r["index"]) for r in rows] == [0, 1, 2, 3]
    assert [r["status"] for r in rows] == ["ok", "diverged", "ok", "ok"]
    assert math.isnan(float(rows[1]["psnr"])) and math.isnan(float(rows[1]["ssim"]))
    assert math.isfinite(float(rows[1]["psnr_input"]))  # the baseline of a diverged sample still counts
    for r in (rows[0], rows[2], rows[3]):
        assert 5 < float(r["psnr"]) < 60 and 0 < float(r["ssim"]) <= 1
        assert 5 < float(r["psnr_input"]) < 60 and int(r["nfe"]) == 2 and float(r["seconds"]) >= 0

    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved == summary
    assert saved["counts"] == {"ok": 3, "diverged": 1}
    assert {saved[k] for k in ("solver", "task", "prior", "data")} == {"tiny"}
    ok_psnr = [float(r["psnr"]) for r in rows if r["status"] == "ok"]
    assert saved["metrics"]["psnr"]["mean"] == pytest.approx(np.mean(ok_psnr))
    assert saved["metrics"]["psnr"]["std"] == pytest.approx(np.std(ok_psnr))

    from PIL import Image

    with Image.open(run_dir / "grid.png") as im:  # rows truth | measurement | recon; 16 px shown ×6
        assert im.size[0] > 3 * 96 and 3 * 96 < im.size[1] < 3 * 96 + 20
    assert (run_dir / "config.yaml").read_text().count("nan_indices") == 1
    assert sorted(p.name for p in (run_dir / "samples").glob("*.pt")) == [f"{i:05d}.pt" for i in range(4)]
    logged = read_csv(run_dir / "csv" / "metrics.csv")  # logger=csv in the tiny experiment
    test_psnr = [float(r["test/psnr"]) for r in logged if r.get("test/psnr")]
    assert test_psnr == [pytest.approx(saved["metrics"]["psnr"]["mean"], rel=1e-5)]


def test_resume_solves_only_unfinished_samples(tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "solved.log"
    args = (f"solver.log_path={log}",)
    run(tmp_path, run_dir, *args)
    assert sorted(solved(log)) == [0, 1, 2, 3]
    first = read_csv(run_dir / "results.csv")
    (run_dir / "samples" / "00002.json").unlink()  # as if killed while solving sample 2
    mtimes = {p.name: p.stat().st_mtime_ns for p in (run_dir / "samples").glob("*.json")}
    log.unlink()

    run(tmp_path, run_dir, *args)
    assert solved(log) == [2]
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "samples").glob("*.json")
            if p.name != "00002.json"} == mtimes
    again = read_csv(run_dir / "results.csv")
    assert [r["index"] for r in again] == ["0", "1", "2", "3"]
    assert [r["psnr"] for r in again] == [r["psnr"] for r in first]  # per-index determinism

    log.unlink()
    run(tmp_path, run_dir, *args)  # everything done: nothing solved, report still written
    assert solved(log) == []
    assert len(read_csv(run_dir / "results.csv")) == 4


def test_rerun_with_other_settings_is_refused(tmp_path):
    from invlab.errors import ConfigError

    run_dir = tmp_path / "run"
    run(tmp_path, run_dir, "data.limit=2")
    with pytest.raises(ConfigError, match="different solver"):
        run(tmp_path, run_dir, "data.limit=2", "solver.iters=3")
    with pytest.raises(ConfigError, match="track_best"):   # rows with and without the oracle columns
        run(tmp_path, run_dir, "data.limit=2", "track_best=true")
    assert run(tmp_path, run_dir, "data.limit=3")["counts"] == {"ok": 3}  # extending a run is fine


def test_logger_none_writes_no_logger_files(tmp_path):
    run_dir = tmp_path / "run"
    summary = run(tmp_path, run_dir, "logger=none", "data.n=2", "batch_size=1")
    assert summary["counts"] == {"ok": 2}
    names = {p.name for p in run_dir.iterdir()}
    assert {"results.csv", "summary.json", "grid.png", "config.yaml", "samples"} <= names
    assert not names & {"csv", "wandb", "lightning_logs"}


# ---- the pieces on their own -----------------------------------------------------------------
def test_store_done_and_rows(tmp_path):
    from invlab.engine.store import SampleStore

    store = SampleStore(tmp_path)
    store.write(3, {"index": 3, "psnr": float("nan"), "status": "diverged"})
    store.write(1, {"index": 1, "psnr": 20.0, "status": "ok"}, strip=np.zeros((4, 4, 3), np.uint8))
    assert store.done() == {1, 3}
    rows = store.rows(range(3))  # only indices of the current dataset
    assert [r["index"] for r in rows] == [1] and store.path(1, ".png").exists()
    assert math.isnan(store.rows([3])[0]["psnr"])
    assert not list(store.dir.glob(".*tmp"))


def test_summary_counts_missing_and_ignores_diverged():
    from invlab.engine.report import summarize

    rows = [{"index": 0, "psnr": 10.0, "status": "ok"}, {"index": 1, "psnr": math.nan, "status": "diverged"}]
    s = summarize(rows, {"solver": "s", "task": "t", "prior": "p", "data": "d"}, expected=3)
    assert s["counts"] == {"ok": 1, "diverged": 1, "missing": 1}
    assert s["metrics"]["psnr"] == {"mean": 10.0, "std": 0.0, "n": 1}
    assert s["metrics"]["ssim"]["mean"] is None


def test_images_grid_and_tiles():
    import torch

    from invlab.utils import images

    gray, rgb = images.to_uint8(torch.rand(1, 5, 6)), images.to_uint8(np.full((3, 5, 6), np.nan))
    assert gray.shape == rgb.shape == (5, 6, 3) and rgb.max() == 0
    assert images.resize(gray, 10, 12).shape == (10, 12, 3)
    g = images.grid([[gray, gray], [rgb]], pad=1, min_cell=1)
    assert g.shape == (1 + 2 * 6, 1 + 2 * 7, 3)
    big = images.grid([[gray]], pad=0, min_cell=20)  # small tiles grow by a whole factor (4 here)
    assert big.shape == (20, 24, 3) and np.array_equal(big[::4, ::4], gray)


def test_import_is_light():
    code = ("import sys, invlab, invlab.engine, invlab.engine.runner, invlab.cli.errors, invlab.utils.images;"
            "print(sorted(m for m in ('lightning', 'torchmetrics', 'wandb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_real_components_run_through_the_engine(tmp_path):
    """The project's own data, task, prior and solver configs (not stand-ins), two 28×28 digits."""
    run_dir = tmp_path / "run"
    summary = run(tmp_path, run_dir, "data=digits", "data.limit=2", "task=denoise", "prior=tv",
                  "solver=pnp_hqs", "logger=none")
    assert (summary["data"], summary["task"], summary["prior"], summary["solver"]) == \
        ("digits", "denoise", "tv", "pnp_hqs")
    assert summary["counts"] == {"ok": 2}
    assert summary["metrics"]["psnr"]["mean"] > summary["metrics"]["psnr_input"]["mean"]


def test_summary_adds_optional_columns_only_where_present():
    from invlab.engine.report import format_summary, summarize

    names = {"solver": "s", "task": "t", "prior": "p", "data": "d"}
    base = {"psnr": 20.0, "ssim": 0.5, "psnr_input": 10.0, "ssim_input": 0.1, "nfe": 3, "seconds": 1.0,
            "net_seconds": 0.5, "status": "ok"}
    plain = summarize([dict(base)], names, 1)
    assert "psnr_best" not in plain["metrics"] and "oracle" not in format_summary(plain)
    rows = [{**base, "psnr_best": 22.0, "iter_best": 4, "iter_stop": 9}, {**base, "psnr_best": "", "iter_stop": 0}]
    s = summarize(rows, names, 2)
    assert s["metrics"]["psnr_best"] == {"mean": 22.0, "std": 0.0, "n": 1}   # the empty cell is not a 0
    assert s["metrics"]["iter_stop"]["mean"] == 4.5
    text = format_summary(s)
    assert "oracle best PSNR over the iterations 22.00" in text and "early stop at iteration 4" in text


def test_phase_retrieval_runs_also_report_metrics_up_to_its_ambiguities(tmp_path):
    """Fourier phase retrieval rows carry psnr_aligned/ssim_aligned (A.align: shifts, 180° rotation); the
    unshifted x̂ is one of the candidates, so the aligned PSNR is never below the plain one."""
    run_dir = tmp_path / "run"
    summary = run(tmp_path, run_dir, "data=digits", "data.limit=2", "task=phase_retrieval", "prior=tv",
                  "solver=pnp_hqs", "solver.iters=3", "logger=none")
    rows = read_csv(run_dir / "results.csv")
    assert all(float(r["psnr_aligned"]) >= float(r["psnr"]) - 1e-4 for r in rows)
    assert summary["metrics"]["psnr_aligned"]["n"] == 2 and "ssim_aligned" in summary["metrics"]
    plain = run(tmp_path, tmp_path / "plain", "data=digits", "data.limit=1", "task=denoise", "prior=tv",
                "solver=pnp_hqs", "solver.iters=3", "logger=none")
    assert "psnr_aligned" not in plain["metrics"]


def test_solver_callbacks_chain_and_the_iteration_bar_counts():
    from invlab.engine.module import SolverProgress, chain

    seen = []
    assert chain(None, None) is None
    both = chain(lambda k, x, i: seen.append(("a", k)), None, lambda k, x, i: seen.append(("b", k)))
    both(3, None, {})
    assert seen == [("a", 3), ("b", 3)]
    with SolverProgress("test", enabled=True) as bar:   # tqdm shows it only on a terminal
        for k in range(4):
            bar(k, None, {})
    assert bar.iterations == 4
    with SolverProgress("off", enabled=False) as off:
        off(0, None, {})
        assert off.bar is None
