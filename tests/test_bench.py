"""scripts/bench.py: both suites run and report wall ≥ network time of the same solve (the ratio's premise)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bench():
    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
