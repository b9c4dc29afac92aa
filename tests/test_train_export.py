"""Where training exports: the run directory by default; the package's checkpoints only with
export_to_package=true, and never over a shipped prior with a shorter run unless force=true.

The package folder is a tmp copy (invlab.priors.checkpoint.PACKAGE_DIR monkeypatched): the real shipped
files are never touched.
"""
from __future__ import annotations

import hashlib
import shutil

import pytest

from invlab.errors import ConfigError

TINY = ["trainer.max_steps=3", "net.depth=3", "net.features=8", "logger=none", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "val_data.size=32", "val_data.limit=1", "trainer.val_check_interval=3",
        "checkpoint_every=3", "trainer.max_time=null", "data.length=8", "loader.batch_size=4"]


def compose(*overrides):
    from hydra import compose as hydra_compose, initialize_config_dir

    from invlab.cli.train import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides))


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A copy of the shipped dncnn_gray (weights + card) standing in for invlab/checkpoints/."""
    from invlab.priors import checkpoint

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for name in ("dncnn_gray.safetensors", "dncnn_gray.md"):
        shutil.copy(checkpoint.PACKAGE_DIR / name, pkg / name)
    monkeypatch.setattr(checkpoint, "PACKAGE_DIR", pkg)
    return pkg


def test_training_exports_into_the_run_dir_by_default(tmp_path, package):
    from invlab.cli.train import train
    from invlab.priors.checkpoint import read_metadata

    before = digest(package / "dncnn_gray.safetensors")
    out = train(compose("experiment=train/dncnn_gray", *TINY, f"run_dir={tmp_path / 'run'}"))
    assert out == tmp_path / "run" / "dncnn_gray.safetensors"
    assert read_metadata(out)["card"]["steps"] == 3 and out.with_suffix(".md").is_file()
    assert digest(package / "dncnn_gray.safetensors") == before
    assert sorted(p.name for p in package.iterdir()) == ["dncnn_gray.md", "dncnn_gray.safetensors"]


def test_a_short_run_never_replaces_a_shipped_prior_unless_forced(tmp_path, package):
    from invlab.cli.train import train
    from invlab.priors.checkpoint import read_metadata

    shipped = package / "dncnn_gray.safetensors"
    before, card_before = digest(shipped), (package / "dncnn_gray.md").read_text()
    shipped_steps = read_metadata(shipped)["card"]["steps"]
    # refused before any training: trainer.max_steps=3 is below the recipe's 6000 and the card's steps
    with pytest.raises(ConfigError, match=rf"refusing to replace .*trainer.max_steps=3.*steps={shipped_steps}.*force=true"):
        train(compose("experiment=train/dncnn_gray", *TINY, "export_to_package=true", f"run_dir={tmp_path / 'a'}"))
    assert not (tmp_path / "a").exists()
    # an explicit export= into the package needs the flag too
    with pytest.raises(ConfigError, match="export_to_package=true"):
        train(compose("experiment=train/dncnn_gray", *TINY, f"export={shipped}", f"run_dir={tmp_path / 'b'}"))
    assert digest(shipped) == before and (package / "dncnn_gray.md").read_text() == card_before

    out = train(compose("experiment=train/dncnn_gray", *TINY, "export_to_package=true", "force=true",
                        f"run_dir={tmp_path / 'c'}"))
    assert out == shipped and read_metadata(shipped)["card"]["steps"] == 3
    assert digest(shipped) != before and "| steps | 3 |" in (package / "dncnn_gray.md").read_text()
    assert not (tmp_path / "c" / "dncnn_gray.safetensors").exists()


def test_the_check_after_training_and_new_names(tmp_path, package):
    """After training (max_time may stop a run early) the actual steps count; a recipe with no shipped file
    (and no recipe file) may write into the package."""
    from omegaconf import OmegaConf

    from invlab.train.export import check_replace, destination, recipe_steps

    cfg = OmegaConf.create({"recipe": "dncnn_gray", "export_to_package": True, "force": False, "export": "x"})
    assert destination(cfg) == package.resolve() / "dncnn_gray.safetensors"
    assert recipe_steps("dncnn_gray") == 6000 and recipe_steps("no_such_recipe") is None
    with pytest.raises(ConfigError, match="with a 40-step run"):
        check_replace(destination(cfg), 40, cfg)
    check_replace(destination(cfg), 6000, cfg)            # as long as the recipe and the card: fine
    cfg.force = True
    check_replace(destination(cfg), 40, cfg)
    new = OmegaConf.create({"recipe": "brand_new", "export_to_package": True, "force": False, "export": "x"})
    check_replace(destination(new), 1, new)               # nothing shipped under that name
