"""Every solver in conf/solver/ × every task in conf/task/ on a tiny batch (2 images, 1×24×24) with the TV
prior (conf/prior/tv.yaml, 5 inner iterations; the shipped dncnn_gray for a solver that trains a learned
prior's network, PnP-TTT) and solver iterations cut to 2.

A combination either runs — finite output of the image's shape, NFE > 0 — or the solver refuses the
operator with a one-sentence ConfigError, and only for a nonlinear operator (or, for a solver that needs
"image_measurements", such as blind deblurring, measurements that are not image-shaped; for a solver with a
`minibatch` data gradient, such as ODER, an operator without `stochastic_grad`). When the sentence says to set
`gamma` (the step-size default needs ‖AᵀA‖), setting it must make the combination run.
Options are discovered from conf/, so new solvers and tasks are covered without editing this file.
Video tasks (operators in invlab/ops/video.py, clips (B, C, T, H, W)) and the video solver (FLAIR, whose prior
is a conditional video DPM) are the other half of the matrix: crossing them with the image half must be refused
in one sentence (tests/test_flair.py runs FLAIR on its tasks).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from invlab.errors import ConfigError
from invlab.utils.config import build

CONF = Path(__file__).resolve().parents[1] / "conf"
ALL_SOLVERS = sorted(p.stem for p in (CONF / "solver").glob("*.yaml"))
ALL_TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))


def _is_video_task(name: str) -> bool:
    from omegaconf import OmegaConf

    return str(OmegaConf.load(CONF / "task" / f"{name}.yaml").operator._target_).startswith("invlab.ops.video.")


def _is_video_solver(name: str) -> bool:
    from omegaconf import OmegaConf

    from hydra.utils import get_class

    target = get_class(str(OmegaConf.load(CONF / "solver" / f"{name}.yaml")._target_))
    return getattr(target, "prior_kind", None) == "conditional_video"


VIDEO_TASKS = [t for t in ALL_TASKS if _is_video_task(t)]
VIDEO_SOLVERS = [s for s in ALL_SOLVERS if _is_video_solver(s)]
TASKS = [t for t in ALL_TASKS if t not in VIDEO_TASKS]
SOLVERS = [s for s in ALL_SOLVERS if s not in VIDEO_SOLVERS]
SHAPE = (2, 1, 24, 24)   # square (ct), a multiple of 4 (sr4) and of the CS block size set below
ITERS = 2
GAMMA = 0.1              # the explicit step size a ConfigError about gamma asks for

# (solver, task): reason. A combination that crashes (a bug in solvers/ or ops/) goes here until it is
# fixed; xfail(strict=True) turns green into a failure once it works, so the entry gets removed.
KNOWN_CRASHES: dict[tuple[str, str], str] = {}


@lru_cache(maxsize=None)
def _composed(group: str, option: str) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"{group}={option}", "run_dir=."])[group]


def node(group: str, option: str, **changes) -> DictConfig:
    """A copy of the composed option, made small: iters → ITERS, CS blocks → 8, then `changes`."""
    cfg = _composed(group, option).copy()
    if group == "solver" and "iters" in cfg:
        cfg.iters = ITERS
    if group == "task" and "block_size" in cfg.get("operator", {}):
        cfg.operator.block_size = 8
    for key, value in changes.items():
        cfg[key] = value
    return cfg


# solvers that train a learned prior's network (prior_kind = "learned") get the shipped dncnn_gray, TTT cut short
LEARNED_SMALL = {"ttt_steps": 1, "ttt_iters": 2}

# diffusion solvers (prior_kind = "diffusion") run on an untrained tiny UNet DDPM with their loops cut short
DIFFUSION_SMALL = {"steps": 3, "dds_steps": 2, "pcs_iters": 2, "k_start": 1, "k": 1}


@lru_cache(maxsize=None)
def tiny_diffusion_prior():
    from invlab.nets.unet import UNet
    from invlab.priors.diffusion import DiffusionPrior

    torch.manual_seed(0)
    net = UNet(in_channels=1, channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_levels=[1], heads=2,
               groups=4)
    return DiffusionPrior(net=net, image_size=SHAPE[-2:])


def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(SHAPE[0], SHAPE[1], 6, 6, generator=g)
    return torch.nn.functional.interpolate(coarse, size=SHAPE[-2:], mode="bilinear", align_corners=False)


def one_sentence(msg: str) -> bool:
    return bool(msg) and "\n" not in msg and msg.rstrip().endswith(".") and len(msg) < 400


def params():
    for solver in SOLVERS:
        for task in TASKS:
            marks = ()
            if (solver, task) in KNOWN_CRASHES:
                marks = pytest.mark.xfail(strict=True, reason=KNOWN_CRASHES[solver, task])
            yield pytest.param(solver, task, id=f"{solver}-{task}", marks=marks)


@pytest.mark.parametrize("solver_name,task_name", list(params()))
def test_solver_on_task(solver_name, task_name):
    x = images()
    task = build(node("task", task_name))
    A, y = task.measure(x, [0, 1], seed=0)
    solver_node = node("solver", solver_name)
    if getattr(build(solver_node), "prior_kind", None) == "diffusion":
        prior = tiny_diffusion_prior()
        for key, value in DIFFUSION_SMALL.items():
            if key in solver_node:
                solver_node[key] = value
    elif getattr(build(solver_node), "prior_kind", None) == "learned":  # trains a network: PnP-TTT
        prior = build(node("prior", "dncnn_gray"))
        for key, value in LEARNED_SMALL.items():
            if key in solver_node:
                solver_node[key] = value
    else:
        prior = build(node("prior", "tv", iters=5))

    def solve(cfg):
        return build(cfg)(y, A, prior, generator=torch.Generator().manual_seed(0))

    try:
        result = solve(solver_node)
    except ConfigError as err:
        msg = str(err)
        image_only = "image_measurements" in getattr(build(solver_node), "needs", ()) and \
            (y.is_complex() or y.shape[1:] != x.shape[1:])
        minibatch_only = getattr(build(solver_node), "minibatch", None) is not None and \
            not callable(getattr(A, "stochastic_grad", None))   # ODER needs a minibatch data gradient (CT)
        assert not A.is_linear or image_only or minibatch_only, \
            f"{solver_name} refused the linear operator of task {task_name}: {msg}"
        assert one_sentence(msg), f"not one sentence: {msg!r}"
        if "gamma" not in msg or "gamma" not in solver_node:
            return  # a documented refusal, nothing it asks for can be set here
        result = solve(node("solver", solver_name, gamma=GAMMA))  # the fix the sentence names works

    assert result.x.shape == x.shape, f"output {tuple(result.x.shape)} for images {tuple(x.shape)}"
    assert torch.isfinite(result.x).all()
    assert result.nfe > 0
    assert result.seconds >= 0


@pytest.mark.parametrize("task_name", VIDEO_TASKS)
@pytest.mark.parametrize("solver_name", ["pnp_admm", "dps"])
def test_an_image_solver_on_a_video_task_is_one_sentence(solver_name, task_name):
    from invlab.errors import InvlabError

    task = build(node("task", task_name))
    clip = torch.rand(1, 1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    A, y = task.measure(clip, [0], seed=0)
    from invlab.priors.gaussian import GaussianPrior

    # an image prior that is not frame-wise (TV is: tests/test_prior_frame_wise.py; below it runs)
    prior = tiny_diffusion_prior() if solver_name == "dps" else GaussianPrior(0.5, 0.1, shape=(1, 16, 16))
    solver = build(node("solver", solver_name, **({"steps": 2} if solver_name == "dps" else {})))
    with pytest.raises(InvlabError) as err:
        solver(y, A, prior, generator=torch.Generator().manual_seed(0))
    assert one_sentence(str(err.value)), str(err.value)
    if solver_name == "pnp_admm":  # the per-frame TV baseline of the FLAIR table
        out = solver(y, A, build(node("prior", "tv", iters=5)), generator=torch.Generator().manual_seed(0))
        assert out.x.shape == clip.shape and torch.isfinite(out.x).all()


@pytest.mark.parametrize("solver_name", VIDEO_SOLVERS)
@pytest.mark.parametrize("task_name", ["deblur", "sr4", "inpaint_box"])
def test_a_video_solver_on_an_image_task_is_one_sentence(solver_name, task_name):
    from invlab.errors import InvlabError

    A, y = build(node("task", task_name)).measure(images(), [0, 1], seed=0)
    with pytest.raises(InvlabError) as err:
        build(node("solver", solver_name))(y, A, tiny_diffusion_prior(), generator=torch.Generator().manual_seed(0))
    assert one_sentence(str(err.value)), str(err.value)
