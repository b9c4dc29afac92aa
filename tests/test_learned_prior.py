"""Checkpoints (safetensors + card) and the LearnedDenoiser prior built on them."""
import json

import pytest
import torch
from omegaconf import OmegaConf

from invlab.errors import CheckpointError, ShapeError
from invlab.priors import checkpoint as ckpt
from invlab.priors.checkpoint import build_net, load_checkpoint, resolve_checkpoint, save_checkpoint
from invlab.priors.learned import LearnedDenoiser
from invlab.utils.config import build

DNCNN = {"_target_": "invlab.nets.dncnn.DnCNN", "in_channels": 1, "depth": 4, "features": 8,
         "sigma_input": True, "spectral_norm": True}
DRUNET = {"_target_": "invlab.nets.drunet.DRUNet", "in_channels": 3, "features": [4, 8, 16], "blocks": 1}
CARD = {"recipe": "train/test", "data": "gray_train", "steps": 3, "metrics": {"psnr_25": 21.5}}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    net = build_net(DNCNN)
    net.train()(torch.rand(2, 1, 8, 8), 0.1)  # a training forward moves the spectral-norm state
    return save_checkpoint(tmp_path / "tiny.safetensors", net.eval(), DNCNN, CARD), net


@pytest.mark.parametrize("arch", [DNCNN, DRUNET])
def test_roundtrip_gives_equal_outputs(tmp_path, arch):
    torch.manual_seed(0)
    net = build_net(arch).eval()
    path = save_checkpoint(tmp_path / "net", net, arch, CARD)  # suffix added
    assert path.suffix == ".safetensors" and path.with_suffix(".md").is_file()
    loaded, arch2, card = load_checkpoint(path)
    assert arch2 == arch and card["recipe"] == "train/test" and card["channels"] == arch["in_channels"]
    x = torch.rand(2, arch["in_channels"], 19, 23)
    torch.testing.assert_close(loaded(x, torch.tensor([0.05, 0.2])), net(x, torch.tensor([0.05, 0.2])), rtol=0, atol=0)


def test_metadata_and_markdown_card(saved):
    path, _ = saved
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["arch"])["_target_"] == "invlab.nets.dncnn.DnCNN"
    card = json.loads(meta["card"])
    assert card["steps"] == 3 and card["metrics"]["psnr_25"] == 21.5 and "date" in card
    md = path.with_suffix(".md").read_text()
    assert "psnr_25" in md and "21.50" in md and "train.py experiment=train/test" in md


def test_missing_checkpoint_names_the_path_and_the_recipe(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(missing)
    assert str(missing) in str(e.value) and "\n" not in str(e.value)


def test_missing_shipped_name_says_how_to_train_it(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "PACKAGE_DIR", tmp_path)
    with pytest.raises(CheckpointError) as e:
        resolve_checkpoint("dncnn_gray")
    assert "python train.py experiment=train/dncnn_gray" in str(e.value)
    assert str(tmp_path / "dncnn_gray.safetensors") in str(e.value)


def test_names_resolve_in_the_package_folder(saved, tmp_path, monkeypatch):
    path, _ = saved
    monkeypatch.setattr(ckpt, "PACKAGE_DIR", path.parent)
    assert resolve_checkpoint("tiny") == path
    assert resolve_checkpoint(str(path)) == path


def test_mismatched_tensors_raise_checkpoint_error(saved, tmp_path):
    path, net = saved
    from safetensors.torch import load_file, save_file

    other = dict(DNCNN, features=16)
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(path)), str(bad), metadata={"arch": json.dumps(other), "card": "{}"})
    with pytest.raises(CheckpointError, match="do not match its architecture"):
        load_checkpoint(bad)
    evil = tmp_path / "evil.safetensors"
    save_file(load_file(str(path)), str(evil), metadata={"arch": json.dumps({"_target_": "os.system"})})
    with pytest.raises(CheckpointError, match="not a network in invlab.nets"):
        load_checkpoint(evil)
    notckpt = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(1)}, str(notckpt))
    with pytest.raises(CheckpointError, match="not an invlab checkpoint"):
        load_checkpoint(notckpt)


def test_learned_denoiser(saved):
    path, net = saved
    prior = build(OmegaConf.create({"name": "learned", "_target_": "invlab.priors.learned.LearnedDenoiser",
                                    "checkpoint": str(path), "device": None}))
    assert prior.name == "learned" and prior.channels == 1 and prior.differentiable
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        out = prior.denoise(x, 0.1)
    torch.testing.assert_close(out, net(x, torch.full((2,), 0.1)))
    assert not out.requires_grad and prior.stats.nfe == 1
    prior.train()
    assert not prior.net.training  # the wrapped net stays in eval mode
    with pytest.raises(ShapeError) as e:
        prior.denoise(torch.rand(1, 3, 16, 16), 0.1)
    assert "1-channel" in str(e.value) and "\n" not in str(e.value)
    assert "data.grayscale=true" in str(e.value)   # a gray prior on colour data: make the data gray


def test_a_colour_prior_on_gray_data_points_to_colour_data():
    from invlab.priors.base import Prior

    prior = Prior()
    prior.channels = 3
    with pytest.raises(ShapeError) as e:
        prior.check_input(torch.rand(1, 1, 16, 16))
    msg = str(e.value)
    assert "3-channel" in msg and "data.grayscale=false" in msg and "data.grayscale=true" not in msg


def test_gradients_flow_through_the_prior_when_enabled(saved):
    path, _ = saved
    prior = LearnedDenoiser(str(path))
    x = torch.rand(1, 1, 12, 12, requires_grad=True)
    prior.denoise(x, 0.1).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in prior.parameters())  # weights are frozen
    s = prior.score(x.detach(), 0.1)
    assert s.shape == x.shape


def test_learned_prior_config():
    cfg = OmegaConf.load("conf/prior/learned.yaml")
    assert cfg.name == "learned" and OmegaConf.is_missing(cfg, "checkpoint")
    from invlab.cli.errors import user_message

    with pytest.raises(Exception) as e:  # hydra wraps it; the CLI finds the CheckpointError in the chain
        build(OmegaConf.merge(cfg, {"checkpoint": "/nonexistent/net.safetensors"}))
    msg = user_message(e.value)
    assert msg.startswith("checkpoint '/nonexistent/net.safetensors' not found") and "\n" not in msg


def test_a_diffusion_checkpoint_is_refused_with_a_pointer(tmp_path):
    """A DDPM's net takes a timestep, not a noise level: loading it as a denoiser would be silently wrong."""
    arch = {"_target_": "invlab.nets.unet.UNet", "in_channels": 1, "channels": 8, "channel_mult": [1, 2],
            "num_res_blocks": 1, "attention_levels": [], "mid_attention": False, "groups": 4}
    path = save_checkpoint(tmp_path / "ddpm.safetensors", build_net(arch), arch,
                           {"recipe": "train/ddpm_test", "kind": "diffusion"})
    with pytest.raises(CheckpointError, match="diffusion model") as info:
        LearnedDenoiser(str(path))
    assert "\n" not in str(info.value)
    assert "Learned diffusion prior" in path.with_suffix(".md").read_text()
