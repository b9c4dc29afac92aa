"""Bad input gets one sentence that names the key or file, never a silent wrong answer (issue 16, 9b, 9e, 10).

What is checked: a 16-bit PNG / PGM loads scaled by its depth (against the array the test wrote, divided
by 65,535), not clipped to white; a corrupt or non-image file in a folder is named; integer settings that
are text, fractions or out of range (solver iteration counts over every solver config, data.limit,
data.size, seed, batch_size, the blur kernel size, trainer.devices) are refused before anything is solved;
a run_dir that cannot be written (below a file, under /proc, read-only) is refused and left untouched.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers_engine import REPO, compose, run_py

pytestmark = pytest.mark.filterwarnings("ignore")


def ramp16(h: int = 12, w: int = 12) -> np.ndarray:
    """A 16-bit ramp that covers the whole range; its 8-bit clip (Pillow's I;16 -> L) is almost all 255."""
    return np.linspace(0, 65535, h * w).round().astype(np.uint16).reshape(h, w)


# ---- 9(b): 16-bit images ---------------------------------------------------------------------------
def test_16bit_png_and_pgm_load_scaled_by_their_depth(tmp_path):
    from invlab.data.datasets import folder

    raw = ramp16()
    Image.fromarray(raw).save(tmp_path / "a16.png")
    with Image.open(tmp_path / "a16.png") as im:
        assert im.mode == "I;16"  # the file really is 16-bit
    (tmp_path / "b16.pgm").write_bytes(b"P5\n12 12\n65535\n" + raw.astype(">u2").tobytes())
    expected = raw.astype(np.float64) / 65535.0  # the reference: the written integers over the 16-bit maximum

    gray = folder(str(tmp_path), size=None)
    assert gray.sources == ["a16.png", "b16.pgm"]
    for k in range(2):
        np.testing.assert_allclose(gray[k]["x"][0].double().numpy(), expected, atol=1e-6)
    assert float(gray[0]["x"].mean()) == pytest.approx(0.5, abs=1e-3)  # mid-grey on average, not white

    rgb = folder(str(tmp_path), size=None, grayscale=False, limit=1)
    assert rgb[0]["x"].shape == (3, 12, 12)
    for c in range(3):
        np.testing.assert_allclose(rgb[0]["x"][c].double().numpy(), expected, atol=1e-6)


def test_8bit_images_load_as_before(tmp_path):
    from invlab.data.datasets import folder

    gray = (np.arange(144).reshape(12, 12) * 1.7).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_allclose(folder(str(tmp_path), size=None)[0]["x"][0].numpy(), gray / 255.0, atol=1e-7)


@pytest.mark.parametrize("content", [b"this is not an image\n", "truncated"])
def test_a_file_that_is_not_an_image_is_named(tmp_path, content):
    from invlab.data.datasets import folder
    from invlab.errors import ConfigError

    Image.fromarray(ramp16().astype(np.uint8)).save(tmp_path / "a_good.png")
    if content == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "z.png")
        data = (tmp_path / "z.png").read_bytes()
        (tmp_path / "z.png").write_bytes(data[: len(data) // 2])
    else:
        (tmp_path / "z.png").write_bytes(content)
    with pytest.raises(ConfigError, match="z.png"):
        folder(str(tmp_path), size=None)


@pytest.mark.parametrize("key,value", [("limit", 1.5), ("limit", 0), ("limit", "abc"), ("size", 0), ("size", 2.5)])
def test_folder_counts_are_whole_numbers(tmp_path, key, value):
    from invlab.data.datasets import folder
    from invlab.errors import ConfigError

    Image.fromarray(ramp16().astype(np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ConfigError, match=f"data.{key} must be a whole number"):
        folder(str(tmp_path), **{key: value})


def sized_datasets():
    """Every conf/data option with a `size` and with a `limit` (those with a `???` value such as folder's path
    aside; options that extend another, such as mnist_test8, are that other one)."""
    from omegaconf import OmegaConf

    nodes = {p.stem: OmegaConf.load(p) for p in sorted((REPO / "conf" / "data").glob("*.yaml"))}
    nodes = {name: node for name, node in nodes.items()
             if "defaults" not in node and not OmegaConf.missing_keys(node)}
    return [(name, key) for name, node in nodes.items() for key in ("size", "limit") if key in node]


@pytest.mark.parametrize("name,key", sized_datasets())
@pytest.mark.parametrize("value", [0, 1.5])
def test_bundled_dataset_counts_are_whole_numbers(name, key, value):
    from invlab.errors import ConfigError
    from invlab.utils.config import build, load_option

    with pytest.raises(ConfigError, match=f"data.{key} must be a whole number"):
        build(load_option("data", name, [f"{key}={value}"]))


# ---- 9(e): iteration counts of every solver -----------------------------------------------------------
def solver_counts():
    """(solver config, count key) for every conf/solver option with an `iters` or `steps` setting."""
    from omegaconf import OmegaConf

    out = []
    for path in sorted((REPO / "conf" / "solver").glob("*.yaml")):
        node = OmegaConf.load(path)
        out += [(path.stem, key) for key in ("iters", "steps") if key in node]
    return out


COUNTS = solver_counts()


def test_the_solvers_of_the_issue_have_iteration_counts():
    assert {"pnp_admm", "pnp_pgd", "pnp_hqs", "red", "pnp_ttt"} <= {name for name, _ in COUNTS}


@pytest.mark.parametrize("name,key", COUNTS)
@pytest.mark.parametrize("value", [-3, 0, 1.5, "abc"])
def test_solver_iteration_counts_are_whole_and_positive(name, key, value):
    from invlab.errors import ConfigError
    from invlab.utils.config import build, load_option

    with pytest.raises(ConfigError, match=f"solver.{key} must be a whole number >= 1"):
        build(load_option("solver", name, [f"{key}={value}"]))


def test_a_solver_declared_with_real_types_is_checked_too():
    """Annotations that are classes (a module without `from __future__ import annotations`), not strings."""
    from dataclasses import make_dataclass

    from invlab.errors import ConfigError
    from invlab.solvers.base import Solver

    Plain = make_dataclass("Plain", [("iters", int, 5), ("rate", float, 0.1)], bases=(Solver,))
    assert Plain(iters=3.0).iters == 3 and Plain(rate=0.5).rate == 0.5
    with pytest.raises(ConfigError, match="solver.iters must be a whole number >= 1, got 'abc'"):
        Plain(iters="abc")


@pytest.mark.parametrize("name,key", [c for c in COUNTS if c[0] in ("pnp_admm", "pnp_hqs", "red")])
def test_one_iteration_still_builds_and_an_integral_float_becomes_an_int(name, key):
    from invlab.utils.config import build, load_option

    assert getattr(build(load_option("solver", name, [f"{key}=1"])), key) == 1
    solver = build(load_option("solver", name, [f"{key}=2.0"]))
    assert getattr(solver, key) == 2 and type(getattr(solver, key)) is int


def test_pnp_admm_with_one_iteration_calls_the_prior():
    """The lower bound is not too strict: one iteration calls the denoiser and moves off the start point."""
    import torch

    from invlab.ops.blur import Blur
    from invlab.ops.task import Task
    from invlab.priors.tv import TVPrior
    from invlab.solvers.pnp_admm import PnPADMM

    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    task = Task(lambda in_shape, generator: Blur.gaussian(in_shape, kernel_size=3, kernel_std=1.0), sigma_y=0.05)
    A, y = task.measure(x, [0])
    res = PnPADMM(iters=1)(y, A, TVPrior(iters=5))
    assert res.nfe == 1 and not torch.allclose(res.x, A.baseline(y))


@pytest.mark.parametrize("size", [0, 1.5, "abc"])
def test_blur_kernel_size_is_a_whole_number(size):
    from invlab.errors import ConfigError
    from invlab.ops.kernels import gaussian_kernel, motion_kernel, uniform_kernel

    for make in (lambda: gaussian_kernel(size, 2.0), lambda: uniform_kernel(size), lambda: motion_kernel(size)):
        with pytest.raises(ConfigError, match=r"task.operator.kernel_size"):
            make()


# ---- 10: the run's own settings, in-process (fails before anything is solved) -------------------------
@pytest.mark.parametrize("override,key", [
    ("seed=abc", "seed"), ("seed=1.5", "seed"), ("batch_size=0", "batch_size"), ("batch_size=abc", "batch_size"),
    ("grid_max=-1", "grid_max"), ("trainer.devices=abc", "trainer.devices"), ("trainer.devices=0", "trainer.devices"),
    ("trainer.devices=1.5", "trainer.devices"), ("++trainer.num_nodes=abc", "trainer.num_nodes"),
    ("solver.iters=abc", "solver.iters"), ("solver.iters=-3", "solver.iters"),
    ("task=deblur", "task.operator.kernel_size"),   # with kernel_size=0 below
])
def test_bad_run_settings_name_the_key(tmp_path, override, key):
    from invlab.cli.errors import user_message
    from invlab.cli.run import experiment
    from invlab.errors import ConfigError

    extra = ["task.operator.kernel_size=0"] if override == "task=deblur" else []
    cfg = compose(tmp_path / "conf", tmp_path / "run", override, *extra)
    with pytest.raises(ConfigError) as info:
        experiment(cfg)
    assert key in user_message(info.value)
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


@pytest.mark.parametrize("devices", ["auto", 1, -1, "2", "0,1", [0, 1]])
def test_valid_device_settings_pass(devices):
    from invlab.engine.runner import check_devices

    check_devices(devices)


def unwritable_run_dirs(tmp_path: Path) -> list[Path]:
    (tmp_path / "a_file").write_text("x")
    dirs = [tmp_path / "a_file" / "run", Path("/proc") / "invlab_run", Path("/sys") / "invlab_run"]  # /sys: not even root
    if os.geteuid() != 0:  # root writes into read-only folders, so that case needs an ordinary user
        ro = tmp_path / "read_only"
        ro.mkdir()
        ro.chmod(0o555)
        dirs.append(ro / "run")
    return dirs


def test_unwritable_run_dir_is_refused_in_one_sentence(tmp_path):
    from invlab.cli.run import experiment
    from invlab.errors import RunDirError

    for run_dir in unwritable_run_dirs(tmp_path):
        with pytest.raises(RunDirError, match="cannot be written"):
            experiment(compose(tmp_path / "conf", run_dir, "data.n=1"))


def test_cli_bad_settings_are_one_sentence(tmp_path):
    """As a user sees it (subprocess): one `error:` line naming the key, no traceback, no files written."""
    (tmp_path / "a_file").write_text("x")
    for args, fragment in [(["trainer.devices=abc"], "trainer.devices"), (["seed=abc"], "seed"),
                           ([f"run_dir={tmp_path / 'a_file' / 'run'}"], "cannot be written")]:
        out = run_py(tmp_path, "data.n=1", *args, timeout=120)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], out.stderr
    assert (tmp_path / "a_file").read_text() == "x"


@pytest.mark.parametrize("override,key", [("seed=abc", "seed"), ("loader.batch_size=0", "loader.batch_size"),
                                          ("trainer.devices=abc", "trainer.devices")])
def test_bad_train_settings_name_the_key(tmp_path, override, key):
    from hydra import compose as hydra_compose, initialize_config_dir

    from invlab.cli.errors import user_message
    from invlab.cli.train import train
    from invlab.errors import ConfigError

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose("train", overrides=[override, f"run_dir={tmp_path / 'run'}", "logger=none"])
    with pytest.raises(ConfigError) as info:
        train(cfg)
    assert key in user_message(info.value)
    assert not (tmp_path / "run").exists()
