"""Fine-tuning (`init_from`) and training from inpainting measurements only (`measure.task`)."""
from pathlib import Path

import pytest
import torch

from invlab.errors import ConfigError
from tests.test_train import compose

TINY = ["logger=none", "trainer.enable_progress_bar=false", "trainer.max_time=null", "trainer.val_check_interval=2",
        "checkpoint_every=2", "val_data.limit=4", "loader.val_batch_size=4"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A 3-layer DnCNN checkpoint (random weights) to start from."""
    from invlab.nets.dncnn import DnCNN
    from invlab.priors.checkpoint import save_checkpoint

    torch.manual_seed(0)
    arch = {"_target_": "invlab.nets.dncnn.DnCNN", "in_channels": 1, "depth": 3, "features": 8, "sigma_input": True}
    net = DnCNN(**{k: v for k, v in arch.items() if k != "_target_"})
    return save_checkpoint(tmp_path_factory.mktemp("init") / "start.safetensors", net, arch, {"recipe": "start"})


def train_cfg(tmp_path, *overrides):
    return compose("data=mnist_train", "data@val_data=mnist_test", "data.limit=16", "patches=null",
                   "loader.batch_size=8", *TINY, f"run_dir={tmp_path / 'run'}", f"export={tmp_path / 'out.safetensors'}",
                   *overrides, hydra_config=False)


def test_init_from_loads_the_weights_and_architecture(tmp_path, tiny_ckpt):
    from invlab.cli.train import train
    from invlab.priors.checkpoint import load_checkpoint

    # net.depth=12 in the config is replaced by the checkpoint's depth 3; lr 0 keeps the weights unchanged
    out = train(train_cfg(tmp_path, f"init_from={tiny_ckpt}", "net.depth=12", "module.lr=0.0", "trainer.max_steps=2"))
    net, arch, card = load_checkpoint(out)
    start, arch0, _ = load_checkpoint(tiny_ckpt)
    assert arch["depth"] == 3 and card["init_from"] == str(tiny_ckpt) and card["steps"] == 2
    for (k, a), (_, b) in zip(net.state_dict().items(), start.state_dict().items()):
        assert torch.equal(a, b), k


def test_init_from_with_the_wrong_channels_is_one_sentence(tmp_path):
    from invlab.cli.train import train
    from invlab.nets.dncnn import DnCNN
    from invlab.priors.checkpoint import save_checkpoint

    arch = {"_target_": "invlab.nets.dncnn.DnCNN", "in_channels": 3, "depth": 2, "features": 4}
    rgb = save_checkpoint(tmp_path / "rgb.safetensors", DnCNN(in_channels=3, depth=2, features=4), arch, {})
    with pytest.raises(ConfigError, match="3 channel"):
        train(train_cfg(tmp_path, f"init_from={rgb}", "trainer.max_steps=1"))


def test_measured_images_carry_no_dropped_pixel():
    """ỹ and the mask depend on the measured pixels only: changing the clean image where the mask is 0
    changes nothing the training sees."""
    from invlab.data.datasets import ImageDataset
    from invlab.train.measured import MeasuredImages
    from invlab.utils.config import build, load_option

    task = build(load_option("task", "inpaint_blocks", ["sigma_y=0.0"]))
    x = torch.rand(5, 1, 28, 28)
    a = MeasuredImages(ImageDataset(x), task, seed=3)
    x2 = torch.where(a.mask.bool(), x, torch.rand_like(x))          # other values in the dropped pixels
    b = MeasuredImages(ImageDataset(x2), task, seed=3)
    assert 0.2 < float(a.mask.mean()) < 0.8
    torch.testing.assert_close(a.y, b.y)
    torch.testing.assert_close(a.y, x * a.mask + 0.5 * (1 - a.mask))  # ỹ = x⊙M + 0.5(1 − M)


def test_masked_loss_is_the_mean_over_measured_pixels():
    from invlab.train.denoiser import DenoiserModule

    arch = {"_target_": "invlab.nets.dncnn.DnCNN", "in_channels": 1, "depth": 3, "features": 8, "sigma_input": True}
    module = DenoiserModule(arch, sigma_min=0.1, sigma_max=0.1)
    module.log = lambda *a, **k: None
    x, mask = torch.rand(2, 1, 12, 12), (torch.rand(2, 1, 12, 12) > 0.5).float()
    torch.manual_seed(7)
    loss = module.training_step({"x": x, "mask": mask, "index": torch.arange(2)}, 0)
    torch.manual_seed(7)
    sigma = torch.full((2,), 0.1) + 0 * torch.rand(2)                 # the same draws as training_step
    y = x + sigma.view(-1, 1, 1, 1) * torch.randn_like(x)
    err = (module.net(y, sigma) - x).pow(2)
    torch.testing.assert_close(loss, err[mask.bool()].mean())


def test_measurement_training_needs_whole_images_and_an_inpainting_task(tmp_path):
    from invlab.cli.train import train
    from invlab.errors import ShapeError

    with pytest.raises(ConfigError, match="patches=null"):
        train(compose("data=mnist_train", "measure.task=inpaint_blocks", *TINY, f"run_dir={tmp_path}",
                      hydra_config=False))
    with pytest.raises(ShapeError, match="pixel mask"):
        train(train_cfg(tmp_path, "measure.task=sr2", "trainer.max_steps=1"))
    with pytest.raises(ConfigError, match="inpaint_blocks"):
        train(train_cfg(tmp_path, "measure.task=no_such_task", "trainer.max_steps=1"))


def test_mnist_interleave_and_lfw_start():
    from invlab.data.datasets import lfw, mnist

    assert mnist("train", interleave=True, limit=20).labels.tolist() == list(range(10)) * 2
    faces = lfw("faces")
    torch.testing.assert_close(lfw("faces", start=50)[0]["x"], faces[50]["x"])
    with pytest.raises(ConfigError):
        lfw("faces", start=100)
