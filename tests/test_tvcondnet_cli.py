"""TVCondNet end to end through the CLIs: `python train.py experiment=train/tvcondnet` (tiny) exports a
conditioned 1-D CNN with a model card; `python run.py solver=tvcondnet prior.checkpoint=<it>` and
`prior=tv1d` denoise spectra through the engine, whose per-spectrum SNR equals a NumPy recomputation
from the saved reconstructions. Plus the engine's spectrum rows and strip, in process."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers_engine import REPO

ENV = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
SMALL = ["data.n=3", "data.length=128", "logger=none", "trainer.enable_progress_bar=false", "save_tensors=true"]


def _run(script: str, *overrides: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, str(REPO / script), *overrides], cwd=REPO, env=ENV, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _check_snr(run_dir) -> list[dict]:
    from invlab.data.spectra import nmr_synth
    from invlab.engine.store import SampleStore

    with open(run_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    truth = nmr_synth(split="test", n=3, length=128).spectra.double().numpy()
    for r in rows:
        i = int(r["index"])
        xhat = torch.load(SampleStore(run_dir).path(i, ".pt"))["x"].double().numpy()
        ref = 10 * np.log10((truth[i] ** 2).sum() / ((xhat - truth[i]) ** 2).sum())
        assert float(r["snr"]) == pytest.approx(ref, abs=1e-3)
        assert r["status"] == "ok" and r["ssim"] == "nan"
    return rows


@pytest.mark.slow
def test_train_then_run_tvcondnet(tmp_path):
    export = tmp_path / "tvc.safetensors"
    _run("train.py", "experiment=train/tvcondnet", "trainer.max_steps=4", "trainer.max_time=null", "data.n=64",
         "data.length=128", "val_data.n=8", "val_data.length=128", "module.test_data.n=8",
         "module.test_data.length=128", "net.depth=3", "net.features=8", "loader.batch_size=16",
         "trainer.val_check_interval=4", "logger=none", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false", f"export={export}", f"hydra.run.dir={tmp_path / 'train'}")
    from invlab.priors.checkpoint import read_metadata

    meta = read_metadata(export)
    assert meta["arch"]["condition"] is True and meta["card"]["steps"] == 4
    assert meta["card"]["tv_weight"] == 1.5 and set(meta["card"]["test_metrics"]) == {"snr", "snr_gain", "psnr"}
    run_dir = tmp_path / "run"
    out = _run("run.py", "solver=tvcondnet", f"prior.checkpoint={export}", f"run_dir={run_dir}", *SMALL)
    assert "SNR" in out.stdout + out.stderr
    rows = _check_snr(run_dir)
    assert {"snr_input", "snr_gain", "peak_pos_err", "peak_height_err"} <= set(rows[0])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["metrics"]["snr_gain"]["n"] == 3 and (run_dir / "grid.png").is_file()
    tv_dir = tmp_path / "tv"
    _run("run.py", "solver=denoiser", "data=nmr_synth", "task=nmr_denoise", "prior=tv1d", f"run_dir={tv_dir}", *SMALL)
    _check_snr(tv_dir)
    from invlab.engine.store import SampleStore
    from invlab.priors.tv1d import prox_tv1d

    for i in range(3):  # what ran is the config's rule: the exact prox at λ = weight·σ_y = 2.0·0.05
        saved = torch.load(SampleStore(tv_dir).path(i, ".pt"))
        assert torch.allclose(saved["x"], prox_tv1d(saved["y"][None], 0.1)[0], atol=1e-6)


def test_engine_rows_and_strip_for_spectra():
    from invlab.engine.module import Reconstruction  # noqa: F401  (the engine imports engine/spectra)
    from invlab.engine.spectra import spectrum_rows, spectrum_strip

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 64, generator=g)
    y = x + 0.1 * torch.randn(2, 1, 64, generator=g)
    xhat = x + 0.01 * torch.randn(2, 1, 64, generator=g)
    xhat[1, 0, 5] = float("nan")
    rows = spectrum_rows(x, xhat, y)
    assert rows[0]["status"] == "ok" and rows[1]["status"] == "diverged" and np.isnan(rows[1]["snr"])
    ref = 10 * np.log10((x[0] ** 2).sum().item() / ((xhat[0] - x[0]) ** 2).sum().item())
    assert rows[0]["snr"] == pytest.approx(ref, abs=1e-3)
    assert rows[0]["snr_gain"] == pytest.approx(rows[0]["snr"] - rows[0]["snr_input"])
    strip = spectrum_strip(x[0], y[0], xhat[0])
    assert strip.dtype == np.uint8 and strip.shape[1] >= 64 and strip.shape[0] > 3 * 64
