"""Every task config builds and measures; measurements are reproducible per (seed, index); noise models."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from invlab.errors import ConfigError, ShapeError
from invlab.ops.task import Task
from invlab.utils.config import build

TASK_DIR = Path(__file__).resolve().parents[1] / "conf" / "task"
TASKS = sorted(p.stem for p in TASK_DIR.glob("*.yaml"))
EXPECTED = {"denoise", "deblur", "deblur_motion", "deblur_uniform", "sr2", "sr4", "inpaint_box",
            "inpaint_random", "cs", "mri", "mri_multicoil", "ct", "phase_retrieval",
            "phase_retrieval_coded", "quantized", "deblur_nonlinear"}


def raises_config_error(fn) -> None:
    """Hydra wraps errors raised while instantiating; the ConfigError must be the cause."""
    with pytest.raises(Exception) as err:
        fn()
    chain, e = [], err.value
    while e is not None:
        chain.append(e)
        e = e.__cause__
    assert any(isinstance(e, ConfigError) for e in chain), chain


def load(name: str, **overrides) -> Task:
    cfg = OmegaConf.load(TASK_DIR / f"{name}.yaml")
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return build(cfg)


FRAMES = 4   # the clip length the video tasks (invlab/ops/video.py) are tested with


def is_video(name: str) -> bool:
    return str(OmegaConf.load(TASK_DIR / f"{name}.yaml").operator._target_).startswith("invlab.ops.video.")


def batch(n=3, channels=1, size=32, seed=0, name: str | None = None):
    """(n, C, size, size) images, or (n, C, FRAMES, size, size) clips for a video task."""
    frames = (FRAMES,) if name is not None and is_video(name) else ()
    return torch.rand(n, channels, *frames, size, size, generator=torch.Generator().manual_seed(seed))


def test_every_expected_task_has_a_config():
    assert EXPECTED <= set(TASKS)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", TASKS)
def test_task_config_builds_and_measures(name, channels):
    cfg = OmegaConf.load(TASK_DIR / f"{name}.yaml")
    assert cfg.name == name and "sigma_y" in cfg
    task = load(name)
    assert isinstance(task, Task) and task.name == name
    x = batch(channels=channels, name=name)
    A, y = task.measure(x, [0, 1, 2], seed=0)
    assert y.shape == (3, *A.out_shape) and A.in_shape == tuple(x.shape[1:]) and y.shape[1] == channels
    assert A.sigma_y == pytest.approx(task.noise.sigma) and A.noise is task.noise
    assert A.baseline(y).shape == x.shape
    assert torch.isfinite(A.data_fidelity(x, y)).all()
    assert A.grad(x, y).shape == x.shape


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", TASKS)
def test_measurement_is_independent_of_batching(name, channels):
    """Same (seed, index) → same operator parameters and noise, whatever else is in the batch."""
    task = load(name)
    x = batch(channels=channels, name=name)
    _, y_all = task.measure(x, [4, 7, 9], seed=3)
    _, y_one = task.measure(x[1:2], [7], seed=3)
    _, y_pair = load(name).measure(x[[2, 0]], [9, 4], seed=3)     # a fresh task object, other order
    assert torch.allclose(y_all[1:2], y_one, atol=1e-6)
    assert torch.allclose(y_all[[2, 0]], y_pair, atol=1e-6)
    _, y_other_seed = task.measure(x, [4, 7, 9], seed=4)
    assert not torch.equal(y_all, y_other_seed)


@pytest.mark.parametrize("name", ["deblur_motion", "inpaint_box", "inpaint_random", "deblur_nonlinear"])
def test_per_sample_tasks_draw_one_operator_per_sample(name):
    task = load(name, sigma_y=0.0)
    x = torch.full((3, 1, 32, 32), 0.5)
    x[:, :, 8:24, 8:24] = 1.0
    A, y = task.measure(x, [0, 1, 2], seed=0)
    assert A.param_batch() == 3
    assert not torch.allclose(y[0], y[1])


def test_sigma_y_override_and_channels():
    task = load("deblur", sigma_y=0.05)
    x = batch(2, channels=3)
    A, y = task.measure(x, [0, 1], seed=0)
    assert A.sigma_y == 0.05
    noise = y - A(x)
    assert 0.04 < float(noise.std()) < 0.06


def test_poisson_noise():
    task = load("deblur", noise="poisson", peak=50.0, sigma_y=0.0)
    x = torch.full((2, 1, 32, 32), 0.4)
    A, y = task.measure(x, [0, 1], seed=0)
    assert float(y.min()) >= 0
    assert float(y.mean()) == pytest.approx(0.4, abs=0.01)
    assert float(y.var()) == pytest.approx(0.4 / 50, rel=0.15)      # Var = v / peak
    assert A.sigma_y == pytest.approx((0.5 / 50) ** 0.5)
    assert torch.allclose(y * 50, (y * 50).round(), atol=1e-4)       # photon counts
    with pytest.raises(ConfigError):
        load("mri", noise="poisson").measure(batch(1), [0])       # complex k-space
    with pytest.raises(ConfigError):
        load("cs", noise="poisson").measure(batch(1), [0])        # signed measurements


def test_quantized_task_draws_bits_from_the_logistic_likelihood():
    task = load("quantized")
    x = torch.full((1, 1, 32, 32), 0.7)
    A, y = task.measure(x, [0], seed=0)
    assert set(y.unique().tolist()) <= {-1.0, 1.0} and A.sigma_y == 0
    p_plus = torch.sigmoid(torch.tensor((2 * 0.7 - 1) / 0.4))
    assert float((y > 0).float().mean()) == pytest.approx(float(p_plus), abs=0.05)
    with pytest.raises(ConfigError):
        load("quantized", noise="gaussian").measure(x, [0])


def test_noise_config_errors():
    raises_config_error(lambda: load("deblur", noise="laplace"))
    raises_config_error(lambda: load("quantized", sigma_y=0.1))
    with pytest.raises(ConfigError):
        Task(load("deblur").operator_factory, noise="gaussian", sigma_y=0.1, gain=3)


def test_measure_checks_indices_and_runs_under_grad_free_mode():
    task = load("deblur")
    with pytest.raises(ShapeError):
        task.measure(batch(2), [0])
    A, y = task.measure(batch(2).requires_grad_(True), [0, 1])
    assert not y.requires_grad
