"""Tiny stand-ins for data, task, prior and solver, so engine and CLI tests run in seconds and do not
depend on any particular real component. `write_conf(dir)` writes Hydra configs for them into a folder
that tests add with `hydra.searchpath=[file://<dir>]` (targets are `helpers_engine.*`: tests/ must be
on PYTHONPATH).
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from invlab.ops.base import LinearOperator
from invlab.priors.base import Prior
from invlab.solvers.base import Solver

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


class TinyImages(torch.utils.data.Dataset):
    """Smooth deterministic images in [0, 1]; item i depends on i only."""

    def __init__(self, n: int = 4, size: int = 16, channels: int = 1, limit: int | None = None):
        self.n = n if limit is None else min(n, int(limit))
        self.size, self.channels = size, channels

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        t = torch.linspace(0, math.pi, self.size)
        img = 0.5 + 0.4 * torch.sin((i + 1) * t)[:, None] * torch.cos((i + 2) * t)[None, :]
        x = img.expand(self.channels, -1, -1).clone().float()
        return {"x": x, "index": i}


class Identity(LinearOperator):
    def forward(self, x):
        return x

    def adjoint(self, y):
        return y

    def pinv(self, y):
        return y


class TinyDenoiseTask:
    """y = x + sigma * n, the noise seeded per (seed, index); A records the indices (for TinySolver)."""

    def __init__(self, sigma: float = 0.1):
        self.sigma = sigma

    def measure(self, x, indices, seed: int = 0):
        A = Identity(tuple(x.shape[1:]))
        A.noise = SimpleNamespace(sigma=self.sigma)
        A.indices = list(indices)
        noise = torch.stack([torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(seed * 100_003 + i))
                             for i in indices]).to(x.device)
        return A, x + self.sigma * noise


class TinyPrior(Prior):
    """A 3×3 box-blur 'denoiser'; `checkpoint` is opened like a real weights file would be."""

    def __init__(self, channels: int | None = 1, checkpoint: str | None = None):
        super().__init__()
        self.channels = channels
        if checkpoint is not None:
            with open(checkpoint, "rb"):
                pass
        self.weight = torch.nn.Parameter(torch.ones(1))

    def _denoise(self, x, sigma):
        return self.weight * F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


@dataclass
class TinySolver(Solver):
    """x ← D(x) a few times from y (`delay` seconds each). `nan_indices` make those samples diverge; `log_path` (or env
    INVLAB_TEST_SOLVE_LOG) records every index solved as "index pid" lines, so tests can count what a
    run actually solved, and where."""

    iters: int = 2
    nan_indices: list = field(default_factory=list)
    log_path: str | None = None
    delay: float = 0.0     # seconds slept per iteration: a slow solve to interrupt (SIGTERM tests)

    def solve(self, y, A, prior, *, x_init, generator, trace):
        x = y.clone() if x_init is None else x_init
        for k in range(self.iters):
            x = prior.denoise(x, A.sigma_y)
            time.sleep(self.delay)
            trace(k, x, residual=(x - y).flatten(1).norm(dim=1))
        for j, i in enumerate(A.indices):
            if i in self.nan_indices:
                x[j] = float("nan")
        log_path = self.log_path or os.environ.get("INVLAB_TEST_SOLVE_LOG")  # env: for sweeps
        if log_path:
            with open(log_path, "a") as f:
                f.write("".join(f"{i} {os.getpid()}\n" for i in A.indices))
        return x


CONFIGS = {
    "data/tiny.yaml": "name: tiny\n_target_: helpers_engine.TinyImages\nn: 4\nsize: 16\nlimit: null\n",
    "data/tiny_rgb.yaml": "name: tiny_rgb\n_target_: helpers_engine.TinyImages\nn: 4\nsize: 16\nchannels: 3\n",
    "task/tiny.yaml": "name: tiny\n_target_: helpers_engine.TinyDenoiseTask\nsigma: 0.1\n",
    "task/tiny_strong.yaml": "name: tiny_strong\n_target_: helpers_engine.TinyDenoiseTask\nsigma: 0.2\n",
    "prior/tiny.yaml": "name: tiny\n_target_: helpers_engine.TinyPrior\nchannels: 1\n",
    "prior/tiny_missing.yaml": ("name: tiny_missing\n_target_: helpers_engine.TinyPrior\nchannels: 1\n"
                                "checkpoint: /nonexistent/invlab/tiny.pt\n"),
    "solver/tiny.yaml": "name: tiny\n_target_: helpers_engine.TinySolver\niters: 2\nnan_indices: []\nlog_path: null\n",
    "solver/tiny_long.yaml": "name: tiny_long\n_target_: helpers_engine.TinySolver\niters: 4\n",
    # `experiment=tiny_engine` replaces the default choices before they load, so tests (and multirun,
    # which composes once without the swept values) never need the real default configs.
    "experiment/tiny_engine.yaml": (
        "# @package _global_\ndefaults:\n  - override /data: tiny\n  - override /task: tiny\n"
        "  - override /prior: tiny\n  - override /solver: tiny\n  - override /logger: csv\n"
        "device: cpu\nbatch_size: 2\ntrainer:\n  enable_progress_bar: false\n"),
}


def load_script(relpath: str, name: str | None = None):
    """A repository script (e.g. "scripts/bench.py") imported as a module, to call its functions in-process."""
    import importlib.util

    path = REPO / relpath
    spec = importlib.util.spec_from_file_location(name or path.stem + "_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_conf(root: Path) -> str:
    """Write the stand-in configs under `root`; return the `hydra.searchpath=...` override."""
    for rel, text in CONFIGS.items():
        path = Path(root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return f"hydra.searchpath=[file://{Path(root).resolve()}]"


TINY = ["experiment=tiny_engine"]


def compose(conf: Path, run_dir: Path, *overrides: str):
    """The resolved run config, as `python run.py experiment=tiny_engine run_dir=... *overrides`."""
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=[write_conf(conf), *TINY, f"run_dir={run_dir}", *overrides])


def cli_env(tmp: Path) -> dict:
    """Environment for `python run.py` subprocesses: stand-ins importable, W&B offline and contained."""
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "LOCAL_RANK", "RANK", "NODE_RANK",
                                                            "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO)])
    env.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp),
                "WANDB_CONFIG_DIR": str(tmp / "wandb_config"), "WANDB_CACHE_DIR": str(tmp / "wandb_cache"),
                "WANDB_DATA_DIR": str(tmp / "wandb_data"), "OMP_NUM_THREADS": "1"})
    return env


def run_py(tmp_path: Path, *args: str, timeout: float = 240, env: dict | None = None, unset: tuple = ()):
    """`python run.py <flags> experiment=tiny_engine <overrides>` in tmp_path; adds `.seconds`. `unset`
    removes variables from cli_env's, then `env` adds its own."""
    flags = [a for a in args if a.startswith("-")]  # argparse wants -m before the overrides
    overrides = [a for a in args if not a.startswith("-")]
    cmd = [sys.executable, str(REPO / "run.py"), *flags, write_conf(tmp_path / "conf"), *TINY, *overrides]
    full_env = {**{k: v for k, v in cli_env(tmp_path).items() if k not in unset}, **(env or {})}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=timeout)
    out.seconds = time.perf_counter() - t0
    return out


TINY_UNET = ["net.channels=8", "net.channel_mult=[1,2]", "net.attention_levels=[1]", "net.groups=4", "net.heads=2"]


def train_tiny_unet(tmp_path: Path, recipe: str, steps: int, *extra: str) -> tuple[Path, Path]:
    """`python train.py experiment=train/<recipe>` for `steps` steps with a tiny UNet, no logger, validation and
    sample grid at the last step; asserts it finished ok and returns (run_dir, exported checkpoint)."""
    import json

    run_dir, export = tmp_path / "run", tmp_path / f"{recipe}_tiny.safetensors"
    overrides = [f"experiment=train/{recipe}", f"trainer.max_steps={steps}", *TINY_UNET, "logger=none",
                 f"trainer.val_check_interval={steps}", "module.sample_steps=2", "trainer.max_time=null",
                 "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", f"export={export}",
                 f"hydra.run.dir={run_dir}", *extra]
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(REPO / "train.py"), *overrides], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "ok"
    return run_dir, export
