"""Datasets: shapes, ranges, the fixed MNIST split, limits, folder loading, and train/test separation."""
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from invlab.data import datasets, patches, sources
from invlab.errors import ConfigError
from invlab.utils.config import build


@pytest.mark.parametrize("name", ["gray_test", "gray_val", "mnist_test", "mnist_train", "digits", "lfw", "phantoms"])
def test_configs_build_images_in_unit_range(name):
    ds = build(OmegaConf.load(f"conf/data/{name}.yaml"))
    x = ds[0]["x"]
    assert x.dtype == torch.float32 and x.dim() == 3 and x.shape[0] == 1
    assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
    assert ds[len(ds) - 1]["index"] == len(ds) - 1


def test_gray_test_is_the_four_images_at_256():
    ds = datasets.gray_test()
    assert ds.images.shape == (4, 1, 256, 256)
    # camera resized from 512: compare against an independent resize of the source
    from skimage.data import camera
    from skimage.transform import resize

    ref = resize(camera() / 255.0, (256, 256), anti_aliasing=True, order=1)
    assert np.abs(ds.images[0, 0].numpy() - ref).max() < 1e-5


def test_training_images_never_include_test_images():
    assert not set(sources.GRAY_TEST) & set(sources.GRAY_TRAIN)


def test_mnist_split_is_fixed_disjoint_and_balanced():
    train, test = datasets.mnist("train"), datasets.mnist("test")
    assert len(train) == 4000 and len(test) == 1000
    assert torch.bincount(test.labels).tolist() == [100] * 10
    assert test.labels[:10].tolist() == list(range(10))  # interleaved: limit=N stays balanced
    # no test digit appears in the training split
    tr = {t.numpy().tobytes() for t in train.images}
    assert not any(t.numpy().tobytes() in tr for t in test.images[:200])


def test_mnist_class_subset_and_limit():
    ds = datasets.mnist("train", classes=[0, 1, 2, 3, 4], limit=7)
    assert len(ds) == 7 and set(ds.labels.tolist()) <= {0, 1, 2, 3, 4}
    assert set(datasets.mnist("test", classes=[5, 6]).labels.tolist()) == {5, 6}


def test_mnist_start_gives_a_disjoint_validation_slice():
    test, val = datasets.mnist("test"), datasets.mnist("test", start=500, limit=10)
    assert len(val) == 10 and torch.equal(val.images, test.images[500:510])
    assert torch.equal(val.labels, test.labels[500:510])
    with pytest.raises(ConfigError, match="start"):
        datasets.mnist("test", start=1000)


def test_limit_must_be_positive():
    with pytest.raises(ConfigError, match="data.limit"):
        datasets.gray_test(limit=0)


def test_patches_are_reproducible_and_change_with_epoch():
    ds = patches.gray_train(patch_size=32, length=8, seed=3)
    a, b = ds[5]["x"], ds[5]["x"]
    assert a.shape == (1, 32, 32) and torch.equal(a, b)
    ds.set_epoch(1)
    assert not torch.equal(a, ds[5]["x"])


def test_folder_loads_resizes_and_reports_bad_paths(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i, shape in enumerate([(40, 60, 3), (50, 50, 3)]):
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    ds = datasets.folder(str(tmp_path), size=32, limit=None)
    assert ds.images.shape == (2, 1, 32, 32)
    assert datasets.folder(str(tmp_path), size=32, grayscale=False).images.shape == (2, 3, 32, 32)
    with pytest.raises(ConfigError, match="not a folder"):
        datasets.folder(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        datasets.folder(str(tmp_path / "empty"))


def test_phantoms_start_with_shepp_logan():
    ds = datasets.phantoms(n=3, size=64)
    assert ds.images.shape == (3, 1, 64, 64)
    assert not torch.equal(ds.images[1], ds.images[2])
