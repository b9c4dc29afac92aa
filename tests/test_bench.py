"""scripts/bench.py: both suites run and report wall ≥ network time of the same solve (the ratio's premise)."""
from __future__ import annotations

import json

import pytest

from helpers_engine import load_script


def bench():
    return load_script("scripts/bench.py")


@pytest.mark.parametrize("args,solver,nfe", [
    (["--suite", "diffusion", "--solvers", "diffpir", "--batch", "1"], "diffpir", 100),
    (["--size", "32", "--solvers", "pnp_hqs"], "pnp_hqs", 8),
])
def test_bench_reports_network_time_inside_wall_time(tmp_path, args, solver, nfe):
    out = tmp_path / "bench.json"
    assert bench().main([*args, "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert row["solver"] == solver and row["nfe"] == nfe
    assert 0 < row["net_seconds"] <= row["wall_seconds"] and row["overhead_ratio"] >= 1.0
    assert report["meta"]["suite"] == ("diffusion" if "diffusion" in args else "pnp")


def test_priors_suite_times_every_mode_against_eager(tmp_path):
    """A tiny case of `--suite priors`: one small shipped prior, eager vs bf16 (compiled modes are exercised in
    tests/test_prior_speed.py; compiling here would only add time)."""
    out = tmp_path / "priors.json"
    assert bench().main(["--suite", "priors", "--priors", "dncnn_mnist", "--modes", "eager,bf16", "--rounds", "2",
                         "--batch", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["meta"]["suite"] == "priors" and len(report["meta"]["loadavg_start"]) == 3
    rows = {r["mode"]: r for r in report["results"]}
    assert set(rows) == {"eager", "bf16"}
    for r in rows.values():
        assert {"prior", "mode", "size", "batch", "seconds_per_call", "speedup"} <= set(r)
        assert r["prior"] == "dncnn_mnist" and r["size"] == 28 and r["batch"] == 2 and r["seconds_per_call"] > 0
    assert rows["eager"]["speedup"] == 1.0
    assert abs(rows["bf16"]["speedup"] - rows["eager"]["seconds_per_call"] / rows["bf16"]["seconds_per_call"]) < 0.01
    assert bench().main(["--suite", "priors", "--priors", "no_such_prior"]) == 2
