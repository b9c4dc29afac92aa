"""scripts/bench_zoo.py runs both parts (on a small ADM here) and its invlab load keeps one copy of the weights."""
from __future__ import annotations

import json

import pytest

from helpers_engine import load_script

SMALL = {"image_size": 32, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,1", "num_head_channels": 16}


@pytest.mark.slow  # two fresh processes load the file; a benchmark's smoke test, not a CI one
def test_bench_zoo_reports_nfe_time_and_load_memory(tmp_path):
    module = load_script("scripts/bench_zoo.py")
    out = tmp_path / "bench_zoo.json"
    assert module.main(["--size", "32", "--batches", "1,2", "--repeats", "1", "--load-preset", "ffhq",
                        "--arch", json.dumps(SMALL), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["batch"] for r in report["nfe"]] == [1, 2] and all(r["seconds_per_nfe"] > 0 for r in report["nfe"])
    load = report["load"]
    assert load["invlab"]["checksum"] == load["plain"]["checksum"]  # the same weights either way
    assert load["invlab"]["load_seconds"] > 0 and load["plain"]["peak_rss_mb"] > 0
