"""`python ood.py` as a user runs it (subprocesses), on a tiny freshly saved DnCNN checkpoint or the analytic
Gaussian prior, with every pair and detector config composed and built in-process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore")


def ood_py(tmp: Path, *args: str, timeout: float = 120):
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "RANK", "LOCAL_RANK", "NODE_RANK")}
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
                "WANDB_DIR": str(tmp), "WANDB_CONFIG_DIR": str(tmp / "wandb_config"),
                "WANDB_CACHE_DIR": str(tmp / "wandb_cache"), "WANDB_DATA_DIR": str(tmp / "wandb_data")})
    flags = [a for a in args if a.startswith("-")]
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(REPO / "ood.py"), *flags, *[a for a in args if not a.startswith("-")]],
                         cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
    out.seconds = time.perf_counter() - t0
    return out


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    import torch

    from invlab.nets.dncnn import DnCNN
    from invlab.priors.checkpoint import save_checkpoint

    torch.manual_seed(0)
    arch = {"_target_": "invlab.nets.dncnn.DnCNN", "in_channels": 1, "depth": 3, "features": 8, "sigma_input": True}
    net = DnCNN(**{k: v for k, v in arch.items() if k != "_target_"})
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(path, net, arch, {"sigma_range": [0.0, 0.196]})


def test_eigenscore_run_writes_json_histogram_and_wandb(tmp_path, tiny_checkpoint):
    run_dir = tmp_path / "run"
    out = ood_py(tmp_path, "detector=eigenscore", "pair=mnist_near", f"prior.checkpoint={tiny_checkpoint}",
                 "pair.limit=8", "pair.fit_limit=8", "detector.sigmas=[0.05,0.15]", "detector.reps=2",
                 "detector.max_iters=5", "logger=wandb", f"hydra.run.dir={run_dir}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "AUROC" in out.stdout
    report = json.loads((run_dir / "ood.json").read_text())
    assert {"auroc", "fpr95", "scores", "n_id", "n_ood", "n_fit", "detector", "pair", "prior", "seconds",
            "auroc_per_feature", "detector_stats"} <= set(report)
    assert report["detector"] == "eigenscore" and report["pair"] == "mnist_near"
    assert report["n_id"] == report["n_ood"] == report["n_fit"] == 8
    assert len(report["scores"]["id"]) == len(report["scores"]["ood"]) == 8 and 0 <= report["auroc"] <= 1
    assert f"{report['auroc']:.4f}" in out.stdout
    assert set(report["auroc_per_feature"]) == {"eigsum@0.05", "eigsum@0.15"}
    assert report["features"]["names"] == ["eigsum@0.05", "eigsum@0.15"]
    assert np.array(report["features"]["fit"]).shape == (8, 2)
    assert report["detector_stats"]["runs"] == 2 * 24 * 2          # sigmas × images × reps
    assert 0 <= report["detector_stats"]["converged_fraction"] <= 1
    from invlab.utils.images import load_png

    hist = load_png(run_dir / "histogram.png")
    assert hist.shape[0] > 100 and hist.shape[1] > 300 and len(np.unique(hist.reshape(-1, 3), axis=0)) > 3
    assert json.loads((run_dir / "status.json").read_text()) == {"status": "ok"}
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))


def assert_one_sentence(out, *fragments):
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


def test_missing_checkpoint_is_one_sentence(tmp_path):
    """The pair's prior name reaches the loader, whose CheckpointError is printed as one sentence."""
    out = ood_py(tmp_path, "pair=mnist_near", "pair.prior=dncnn_not_trained_xyz", "logger=none",
                 f"hydra.run.dir={tmp_path / 'a'}")
    assert_one_sentence(out, "checkpoint 'dncnn_not_trained_xyz' not found")
    assert json.loads((tmp_path / "a" / "status.json").read_text())["status"] == "failed"


def test_shape_mismatch_is_caught_before_any_work():
    from hydra import compose, initialize_config_dir

    from invlab.cli.errors import user_message
    from invlab.cli.ood import build_all, preflight
    from invlab.errors import ShapeError

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("ood", overrides=["pair=mnist_digits", "prior=gaussian", "pair.limit=2", "pair.fit_limit=2"])
    prior, _, sets = build_all(cfg)
    with pytest.raises(ShapeError) as err:
        preflight(prior, sets)
    msg = user_message(err.value)
    assert "(1, 8, 8)" in msg and "(1, 28, 28)" in msg and "\n" not in msg


def test_a_sweep_with_the_analytic_prior_then_the_seed_table(tmp_path):
    sweep = tmp_path / "sweep"
    out = ood_py(tmp_path, "-m", "detector=score_norm,jacobian_norm", "seed=0,1", "prior=gaussian", "pair=mnist_near",
                 "pair.size=8", "pair.limit=10", "pair.fit_limit=10", "logger=none", f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0]))
    assert [j.name.split("_", 1)[1] for j in jobs] == ["mnist_near_score_norm_gaussian"] * 2 + \
        ["mnist_near_jacobian_norm_gaussian"] * 2
    aurocs = {}
    for j in jobs:
        report = json.loads((j / "ood.json").read_text())
        assert report["prior"] == "gaussian" and report["n_ood"] == 10 and (j / "histogram.png").exists()
        aurocs.setdefault(report["detector"], []).append(report["auroc"])
    # scripts/ood_table.py: mean ± sample std over the two seeds, per detector
    table = subprocess.run([sys.executable, str(REPO / "scripts" / "ood_table.py"), str(sweep)],
                           capture_output=True, text=True, check=True).stdout
    for det, vals in aurocs.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {det} |"))
        assert f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}" in row, (row, vals)


def test_every_pair_and_detector_config_builds():
    import torch
    from hydra import compose, initialize_config_dir

    from invlab.analysis.ood import evaluate
    from invlab.utils.config import build

    pairs = sorted(p.stem for p in (REPO / "conf" / "pair").glob("*.yaml"))
    detectors = sorted(p.stem for p in (REPO / "conf" / "detector").glob("*.yaml"))
    assert {"mnist_near", "mnist_digits", "mnist_far", "faces"} <= set(pairs)
    assert {"eigenscore", "score_norm", "denoising_error"} <= set(detectors)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for pair in pairs:
            cfg = compose("ood", overrides=[f"pair={pair}", "pair.limit=6", "pair.fit_limit=5"])
            assert cfg.pair.prior and cfg.prior.name == "learned"
            size = int(cfg.pair.size)
            for role, n in (("fit", 5), ("id", 6), ("ood", 6)):
                ds = build(cfg.pair[role])
                assert len(ds) == n, (pair, role)
                x = torch.stack([ds[i]["x"] for i in range(len(ds))])
                assert x.shape == (n, 1, size, size) and x.dtype == torch.float32
                assert 0 <= float(x.min()) and float(x.max()) <= 1
        # every detector, as configured but on few images and iterations, through evaluate()
        cfg = compose("ood", overrides=["prior=gaussian", "pair.size=8", "pair.limit=6", "pair.fit_limit=6"])
        prior = build(cfg.prior)
        sets = [build(cfg.pair[role]) for role in ("fit", "id", "ood")]
        for det in detectors:
            cfg = compose("ood", overrides=[f"detector={det}"])
            small = {"max_iters": 3} if "max_iters" in cfg.detector else {}
            d = build(cfg.detector, seed=0, **small)
            assert d.name == det and d.feature_names
            res = evaluate(d, prior, *sets, batch_size=4)
            assert len(res.scores_id) == 6 and np.isfinite(res.scores_ood).all() and 0 <= res.auroc <= 1
