"""Training: every recipe composes, helpers, and `python train.py` end to end (export, card, resume)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from invlab.cli.train import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.stem for p in (ROOT / "conf" / "experiment" / "train").glob("*.yaml"))
TINY = ["trainer.max_steps=4", "net.depth=3", "net.features=8", "logger=none", "trainer.enable_progress_bar=false",
        "val_data.size=32", "trainer.val_check_interval=2", "checkpoint_every=2", "trainer.max_time=null"]


def compose(*overrides, hydra_config=True):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides), return_hydra_config=hydra_config)


def test_recipes_exist():
    assert {"dncnn_gray", "dncnn_mnist", "drunet_gray"} <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_composes_and_builds_its_net(recipe):
    from omegaconf import OmegaConf

    from invlab.priors.checkpoint import build_net

    cfg = compose(f"experiment=train/{recipe}", "logger=csv", "run_dir=/tmp/invlab_recipe_test")
    assert cfg.recipe == recipe and cfg.trainer.max_steps > 0 and cfg.data.name
    assert cfg.get("val_data") is None or cfg.val_data.name  # a recipe may train without validation
    net = build_net(OmegaConf.to_container(cfg.net, resolve=True))
    if str(cfg.net._target_).endswith("CNN1D"):
        x = torch.rand(1, int(cfg.net.in_channels), 64)   # a spectrum (B, C, L); conditioned nets take cond too
        out = net(x, x.clone()) if cfg.net.get("condition") else net(x)
    elif str(cfg.net._target_).endswith("VideoUNet"):  # a clip (B, C, T, H, W) and its condition channels
        x = torch.rand(1, int(cfg.net.in_channels), int(cfg.net.frames), 16, 16)
        out = net(x, torch.tensor([10.0]), torch.rand(1, int(cfg.net.cond_channels), *x.shape[2:]))
    else:
        x = torch.rand(1, int(cfg.net.in_channels), 24, 24)
        out = net(x, torch.tensor([0.1]))
    assert out.shape == x.shape
    assert str(cfg.export).endswith(".safetensors")


def test_lr_schedule_follows_steps_or_time():
    from invlab.train.common import lr_lambda, parse_duration

    f = lr_lambda("cosine", 100, min_ratio=0.01)
    assert f(0) == pytest.approx(1.0) and f(50) == pytest.approx(0.505) and f(100) == pytest.approx(0.01)
    late = lr_lambda("cosine", 100, min_ratio=0.01, time_progress=lambda: 1.0)
    assert late(3) == pytest.approx(0.01)  # the time budget ran out first
    assert lr_lambda("step", 100, milestones=(0.5,), gamma=0.1)(60) == pytest.approx(0.1)
    assert parse_duration("00:01:15:00") == 4500 and parse_duration(None) is None


def test_fixed_noise_is_per_sample():
    from invlab.train.common import fixed_noise

    x = torch.zeros(3, 1, 4, 4)
    a = fixed_noise(x, [0, 1, 2], seed=1)
    b = fixed_noise(x[1:], [1, 2], seed=1)
    torch.testing.assert_close(a[1:], b)
    assert not torch.allclose(a[0], a[1])


def test_folder_images_become_random_patches(tmp_path):
    from PIL import Image

    from invlab.data.datasets import folder
    from invlab.errors import ConfigError
    from invlab.train.common import training_dataset

    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
    ds = training_dataset(folder(str(tmp_path), size=64), {"size": 40, "per_epoch": 10}, seed=0)
    assert len(ds) == 10 and ds[3]["x"].shape == (1, 40, 40)
    with pytest.raises(ConfigError, match="patches=null"):
        training_dataset(folder(str(tmp_path), size=32), {"size": 40, "per_epoch": 10}, seed=0)


def run_train(*overrides, cwd=ROOT):
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny `python train.py experiment=train/dncnn_gray ...` run in a subprocess."""
    tmp = tmp_path_factory.mktemp("train")
    export = tmp / "tiny.safetensors"
    r = run_train("experiment=train/dncnn_gray", *TINY, f"export={export}", f"hydra.run.dir={tmp / 'run'}")
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp, export


def test_train_end_to_end_exports_a_loadable_checkpoint(trained):
    from invlab.priors.learned import LearnedDenoiser

    tmp, export = trained
    prior = LearnedDenoiser(str(export))
    card = prior.card
    assert card["recipe"] == "dncnn_gray" and card["data"] == "gray_train" and card["steps"] == 4
    assert set(card["metrics"]) == {"psnr_15", "psnr_25", "psnr_50"} and card["final_loss"] > 0
    assert card["wall_seconds"] > 0 and card["channels"] == 1
    assert "psnr_25" in export.with_suffix(".md").read_text()
    assert json.loads((tmp / "run" / "status.json").read_text())["status"] == "ok"
    assert (tmp / "run" / "checkpoints" / "last.ckpt").is_file()
    assert prior.denoise(torch.rand(1, 1, 20, 20), 0.1).shape == (1, 1, 20, 20)


def test_resume_from_a_lightning_checkpoint(trained):
    from invlab.cli.train import train
    from invlab.priors.checkpoint import read_metadata

    tmp, export = trained
    export2 = tmp / "resumed.safetensors"
    cfg = compose("experiment=train/dncnn_gray", *TINY, "trainer.max_steps=6", f"run_dir={tmp / 'run2'}",
                  f"ckpt_path={tmp / 'run' / 'checkpoints' / 'last.ckpt'}", f"export={export2}", hydra_config=False)
    assert train(cfg) == export2
    card2 = read_metadata(export2)["card"]
    before = torch.load(tmp / "run" / "checkpoints" / "last.ckpt", weights_only=False)["invlab"]["wall_seconds"]
    assert card2["steps"] == 6 and card2["wall_seconds"] > before > 0  # wall time accumulates over resumes


def test_user_errors_are_one_sentence(tmp_path):
    r = run_train("data=folder", "logger=none", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and "data.path" in lines[-1], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
