"""The paper configs (conf/experiment/paper/<paper>_ffhq.yaml) and every diffusion solver on an ADM prior.

The published ffhq_10m.pt cannot be downloaded here, so the runs swap in the small random-weight ADM fixture
"a" (same code path: scale-shift norm, ResBlock up/down, multi-head attention, learn_sigma) at 32×32 on
colour images, with a budget of two steps: what is checked is that each paper's configuration composes with
the paper's settings, runs end to end as a user types it, and feeds paper_table.py — not the numbers.
"""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers_engine import REPO, cli_env
from invlab.utils.config import build

CONF = REPO / "conf"
FIX = REPO / "tests" / "fixtures" / "interop"
PAPERS = ["dps", "diffpir", "dpnp", "dmplug"]
TWO_STEPS = {"dps": ["solver.steps=2"], "diffpir": ["solver.steps=2"], "dmplug": ["solver.iters=2"],
             "dpnp": ["solver.k_start=1", "solver.k=1", "solver.dds_steps=1", "solver.pcs_iters=1",
                      "solver.init_steps=1"],
             "dolph": ["solver.steps=2"], "pnp_dm": ["solver.iters=2", "solver.dds_steps=1", "solver.pcs_iters=1"]}


def small_adm() -> list[str]:
    io = torch.load(FIX / "adm_small_a_io.pt", weights_only=True)
    arch = [f"prior.arch.{k}=" + (f"'{v}'" if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in io["kwargs"].items()]
    return ["prior=adm", f"prior.checkpoint={FIX / 'adm_small_a_state_dict.pt'}", *arch]


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """Two colour photographs (scikit-image's astronaut and coffee) as 64×64 PNGs: a `data=folder` set."""
    import skimage.data
    import skimage.io
    from skimage.transform import resize

    root = tmp_path_factory.mktemp("faces")
    for name in ("astronaut", "coffee"):
        img = resize(getattr(skimage.data, name)(), (64, 64), anti_aliasing=True)
        skimage.io.imsave(root / f"{name}.png", (img * 255).round().astype(np.uint8), check_contrast=False)
    return root


def rows(paper: str) -> list[str]:
    return list(OmegaConf.load(CONF / "experiment" / "paper" / f"{paper}_ffhq.yaml").paper.rows)


@pytest.mark.parametrize("paper", PAPERS)
def test_every_row_composes_with_the_papers_settings(paper, faces):
    sweep = OmegaConf.load(CONF / "experiment" / "paper" / f"{paper}_ffhq.yaml").hydra.sweeper.params.task
    assert sweep.split(",") == rows(paper)  # the sweep runs exactly the rows that carry the paper's settings
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for task in rows(paper):
            cfg = compose("config", overrides=[f"experiment=paper/{paper}_ffhq", "prior.checkpoint=/none",
                                               f"data.path={faces}", f"task={task}"])
            assert cfg.prior.name == "adm_ffhq" and cfg.solver.name == paper and cfg.data.grayscale is False
            build(cfg.task), build(cfg.solver)  # every interpolated per-row setting resolves and is accepted
            if paper == "dps":
                assert cfg.task.sigma_y == 0.025  # DPS's σ_y = 0.05 on [-1, 1]
            if paper == "diffpir":
                assert cfg.task.sigma_y == 0.05   # DiffPIR's 12.75/255 on [0, 1]


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, str(REPO / "run.py"), *args], cwd=tmp_path, env=cli_env(tmp_path),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.parametrize("paper", PAPERS)
def test_paper_config_runs_two_steps_on_a_random_weight_adm(paper, faces, tmp_path):
    run_dir = tmp_path / "run"
    plus = "+" if paper == "dpnp" else ""  # the spelling, `+experiment=paper/dpnp_ffhq`, works too
    run(tmp_path, f"{plus}experiment=paper/{paper}_ffhq", *small_adm(), f"data.path={faces}", "data.size=32",
        "data.limit=1", "batch_size=1", "logger=none", f"run_dir={run_dir}", f"hydra.run.dir={run_dir}",
        *TWO_STEPS[paper])
    with open(run_dir / "results.csv") as f:
        (result,) = list(csv.DictReader(f))
    assert result["status"] in ("ok", "suspect") and float(result["nfe"]) > 0
    table = subprocess.run([sys.executable, str(REPO / "scripts" / "paper_table.py"), str(tmp_path)],
                           capture_output=True, text=True, check=True).stdout
    assert rows(paper)[0] in table and "PSNR" in table


def test_multirun_gives_the_whole_table_next_to_the_published_numbers(faces, tmp_path):
    run(tmp_path, "-m", "experiment=paper/diffpir_ffhq", *small_adm(), f"data.path={faces}", "data.size=32",
        "data.limit=1", "batch_size=1", "logger=none", f"hydra.sweep.dir={tmp_path / 'sweep'}", "solver.steps=2")
    table = subprocess.run([sys.executable, str(REPO / "scripts" / "paper_table.py"), str(tmp_path / "sweep")],
                           capture_output=True, text=True, check=True).stdout
    lines = [line for line in table.splitlines() if line.startswith("| DiffPIR")]
    assert len(lines) == 3 and "27.36" in table and "26.64" in table  # one row per task, the paper's PSNRs


@pytest.fixture(scope="module")
def adm_prior():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return build(compose("config", overrides=["solver=dps", *small_adm()]).prior)


@pytest.mark.parametrize("solver", ["dps", "diffpir", "dpnp", "dmplug", "dolph", "pnp_dm"])
def test_every_diffusion_solver_runs_on_an_adm_prior_in_colour(solver, adm_prior):
    """In-process (the CLI path is covered above): the solver's own config, a two-step budget, a 3×32×32
    colour deblurring problem; the sample has the image's shape, is finite, and every step called the ADM."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"solver={solver}", "task=deblur", *TWO_STEPS[solver]])
        task, algo = build(cfg.task), build(cfg.solver)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    A, y = task.measure(x, [0], seed=0)
    adm_prior.stats.reset()
    res = algo(y, A, adm_prior, generator=torch.Generator().manual_seed(1))
    assert res.x.shape == x.shape and torch.isfinite(res.x).all()
    assert res.nfe >= 2 and adm_prior.stats.nfe == res.nfe


def test_bicubic_sr_kernel_is_keys_cubic_and_reproduces_linear_images():
    from invlab.ops.resample import SuperResolution

    def keys(t, a=-0.5):  # Keys (1981) cubic convolution kernel, written independently of invlab's
        t = abs(t)
        return (a + 2) * t**3 - (a + 3) * t**2 + 1 if t <= 1 else (a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a if t < 2 else 0.0)

    w = np.array([keys(t / 4) for t in range(-7, 8)])
    want = np.outer(w, w) / np.outer(w, w).sum()
    op = SuperResolution.bicubic((1, 64, 64), scale=4)
    np.testing.assert_allclose(op.kernel[0, 0].numpy(), want, atol=1e-7)
    ramp = torch.arange(64, dtype=torch.float32).view(1, 1, 1, 64).expand(1, 1, 64, 64)
    low = op(ramp)[0, 0]  # interior samples of a ramp are the ramp at the sampled pixels (cubic is exact on lines)
    torch.testing.assert_close(low[:, 2:-2], ramp[0, 0, ::4, ::4][:, 2:-2], atol=1e-4, rtol=0)


def test_diffpir_gaussian_kernel_std_is_drawn_per_image_in_range():
    from invlab.ops.blur import Blur

    stds = []
    for seed in range(20):
        k = Blur.gaussian_random_std((1, 64, 64), torch.Generator().manual_seed(seed)).kernel[0, 0].double()
        t = torch.arange(61, dtype=torch.float64) - 30
        stds.append(float(((k.sum(0) * t**2).sum()).sqrt()))  # marginal std of the (truncated) Gaussian
    assert 2.9 < min(stds) and max(stds) < 9.0 and max(stds) - min(stds) > 2.0
