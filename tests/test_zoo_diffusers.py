"""diffusers UNet2DModel checkpoints as diffusion priors (invlab/priors/zoo/diffusers.py), through conf/prior/diffusers.yaml.

Each case builds a small random UNet2DModel (seeded; GroupNorm affines and any all-zero weights re-randomised so
nothing is trivially 0 or 1), saves it with `save_pretrained` next to a scheduler config, and loads it the way a
user does (run.py's config composed with `prior=diffusers prior.path=...`, built by the CLI's `build`). The references are diffusers' own:
`UNet2DModel.from_pretrained` for the forward, the scheduler's `alphas_cumprod` (float32) and its `step(...)
.pred_original_sample` for x̂0 in every prediction type. Tolerance 1e-5 (float32, CPU), absolute, or relative to the
reference's magnitude where it exceeds 1 (`err`); the measured maxima are printed with -s.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import diffusers  # a pinned dependency (requirements.txt): missing, the test fails rather than skips
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from invlab.errors import CheckpointError, ConfigError, ShapeError
from invlab.priors.schedule import DDPMSchedule
from invlab.utils.config import build

pytestmark = pytest.mark.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]
C, SIZE = 3, 16
UNET = dict(sample_size=SIZE, in_channels=C, layers_per_block=1, block_out_channels=(16, 32), norm_num_groups=8,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=8)
# name: (out_channels, scheduler class, scheduler kwargs, pipeline layout: unet/ and scheduler/ subfolders)
CASES = {
    "eps": (C, "DDPMScheduler", dict(), False),
    "v_learned": (2 * C, "DDIMScheduler", dict(prediction_type="v_prediction", beta_schedule="squaredcos_cap_v2"), True),
    "sample": (C, "DDPMScheduler", dict(prediction_type="sample", beta_schedule="scaled_linear",
                                        beta_start=0.00085, beta_end=0.012), False),
}
TOL = 1e-5


def err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got − ref|, relative to max |ref| where that exceeds 1: near t = T−1, x̂0 = (x_t − √(1−ᾱ) ε)/√ᾱ
    multiplies float32 rounding by 1/√ᾱ (157 at t = 999 of the linear schedule) and reaches |x̂0| ≈ 100."""
    return float((got.double() - ref.double()).abs().max() / max(1.0, float(ref.abs().max())))


def assert_float32_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Our float64 ᾱ against diffusers' float32 one: ≤ 1e-6 relative (measured ≤ 9.3e-7 over the four kinds),
    except the cosine schedule's last step, whose β = 0.999 cap is 0.99899995 in float32 (1 − β off by 4.7e-5;
    ᾱ_{T−1} measured 1.3e-5 relative)."""
    rel = (ours / theirs - 1).abs()
    assert float(rel[:-1].max()) <= 1e-6 and float(rel[-1]) <= 2e-5, (float(rel[:-1].max()), float(rel[-1]))


def random_unet(out_channels: int, seed: int = 0, **over):
    torch.manual_seed(seed)
    net = diffusers.UNet2DModel(**{**UNET, **over}, out_channels=out_channels)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.copy_(1 + 0.1 * torch.randn_like(m.weight))
                m.bias.copy_(0.1 * torch.randn_like(m.bias))
            elif hasattr(m, "reset_parameters") and getattr(m, "weight", None) is not None and not m.weight.any():
                m.reset_parameters()
    return net.eval()


def save(root: Path, case: str) -> Path:
    out_channels, sched_cls, kw, pipeline = CASES[case]
    random_unet(out_channels).save_pretrained(root / "unet" if pipeline else root)
    variance = {"variance_type": "learned_range"} if out_channels == 2 * C and sched_cls == "DDPMScheduler" else {}
    sched = getattr(diffusers, sched_cls)(clip_sample=False, **kw, **variance)
    sched.save_pretrained(root / "scheduler" if pipeline else root)
    return root


def load_prior(path, **over):
    """`prior=diffusers prior.path=<path>` composed with run.py's config and built as the CLI builds it."""
    from hydra import compose, initialize_config_dir

    overrides = ["prior=diffusers", f"prior.path={path}", *(f"prior.{k}={v}" for k, v in over.items())]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return build(cfg.prior)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return {case: save(tmp_path_factory.mktemp(case), case) for case in CASES}


def reference(path: Path, case: str):
    """diffusers' own UNet (from_pretrained) and scheduler (from_pretrained) for a saved case."""
    pipeline = CASES[case][3]
    unet = diffusers.UNet2DModel.from_pretrained(str(path), subfolder="unet" if pipeline else None).eval()
    sched = getattr(diffusers, CASES[case][1]).from_pretrained(str(path), subfolder="scheduler" if pipeline else None)
    return unet, sched


def ref_x0(unet, sched, x_t: torch.Tensor, t: int) -> torch.Tensor:
    """diffusers' x̂0 at integer t: the scheduler's own step on the UNet's output (first C channels for DDIM)."""
    with torch.no_grad():
        out = unet(x_t, t).sample
    if isinstance(sched, diffusers.DDIMScheduler):
        sched.set_timesteps(sched.config.num_train_timesteps)
        out = out[:, :C]
    return sched.step(out, t, x_t, generator=torch.Generator().manual_seed(0)).pred_original_sample


def test_config_composes_and_targets_the_loader():
    cfg = OmegaConf.load(ROOT / "conf" / "prior" / "diffusers.yaml")
    assert cfg.name == "diffusers" and cfg._target_ == "invlab.priors.zoo.diffusers.DiffusersPrior"
    assert OmegaConf.is_missing(cfg, "path")


@pytest.mark.parametrize("case", list(CASES))
def test_eps_and_tweedie_match_diffusers(saved, case):
    prior = load_prior(saved[case])
    unet, sched = reference(saved[case], case)
    out_channels, _, kw, _ = CASES[case]
    assert prior.channels == C and prior.image_size == (SIZE, SIZE)
    assert prior.card["prediction_type"] == kw.get("prediction_type", "epsilon")
    assert prior.card["learned_variance"] == (out_channels == 2 * C)
    c = sched.config
    assert_float32_close(prior.schedule.alphas_cumprod, sched.alphas_cumprod.double())
    # float64 ᾱ from the formulas (diffusers' own is float32): x_t and σ are made with it
    ab_ref = numpy_alphas_cumprod(c.beta_schedule, c.beta_start, c.beta_end, c.num_train_timesteps)
    g = torch.Generator().manual_seed(2)
    errs = {}
    for t in (3, 250, 640, 998, 999):
        z0 = 2 * torch.rand(2, C, SIZE, SIZE, generator=g) - 1
        x_t = ab_ref[t].sqrt().float() * z0 + (1 - ab_ref[t]).sqrt().float() * torch.randn(z0.shape, generator=g)
        x0_ref = ref_x0(unet, sched, x_t, t)
        # ε from x̂0 by the forward process (diffusers' own x̂0 is the reference for every prediction type)
        eps_ref = (x_t - ab_ref[t].sqrt() * x0_ref.double()) / (1 - ab_ref[t]).sqrt()
        tt = torch.full((2,), float(t), dtype=torch.float64)
        errs[f"x0@{t}"] = err(prior.x0(x_t, tt), x0_ref)
        if kw.get("prediction_type", "epsilon") == "epsilon":
            with torch.no_grad():
                errs[f"eps@{t}"] = err(prior.eps(x_t, tt), unet(x_t, t).sample[:, :C])
        elif t >= 250:  # ε from x̂0 divides by √(1−ᾱ_t): ill-conditioned at small t for v and sample models
            errs[f"eps@{t}"] = err(prior.eps(x_t, tt).double(), eps_ref)
        # Tweedie in [0, 1] units: denoise(x, σ) with x = (z + 1)/2, z = x_t/√ᾱ_t and σ = σ_t/2. Not at t = T−1:
        # σ rounded to float32 may land above σ_{T−1}, where the score is extrapolated (by design)
        if t == 999:
            continue
        x, sigma = (x_t / ab_ref[t].sqrt().float() + 1) / 2, float(((1 - ab_ref[t]) / ab_ref[t]).sqrt() / 2)
        errs[f"denoise@{t}"] = err(prior.denoise(x, sigma), (x0_ref + 1) / 2)
    print(case, {k: f"{v:.1e}" for k, v in errs.items()})
    assert max(errs.values()) <= TOL, errs
    # not trivial: the network output varies with x and with t
    with torch.no_grad():
        a, b = unet(x_t, 10).sample, unet(x_t, 900).sample
    assert a.abs().mean() > 0.05 and (a - b).abs().max() > 0.05


def test_fractional_timesteps_reach_the_unet(saved):
    prior = load_prior(saved["eps"])
    unet, _ = reference(saved["eps"], "eps")
    x_t = torch.randn(2, C, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([10.5, 333.25], dtype=torch.float64)
    with torch.no_grad():
        ref = unet(x_t, t.float()).sample
        assert float((prior.eps(x_t, t) - ref).abs().max()) <= TOL
        assert float((unet(x_t, torch.tensor([10, 333])).sample - ref).abs().max()) > 1e-4  # t's fraction matters


def numpy_alphas_cumprod(kind: str, b0: float, b1: float, T: int) -> torch.Tensor:
    """ᾱ in float64 from the schedule formulas (diffusers' DDPMScheduler docs / Nichol & Dhariwal eq. 17)."""
    if kind == "linear":
        betas = np.linspace(b0, b1, T)
    elif kind == "scaled_linear":
        betas = np.linspace(b0**0.5, b1**0.5, T) ** 2
    elif kind == "sigmoid":
        betas = 1 / (1 + np.exp(-np.linspace(-6, 6, T))) * (b1 - b0) + b0
    else:
        f = [math.cos((i / T + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(T + 1)]
        betas = np.array([min(1 - f[i + 1] / f[i], 0.999) for i in range(T)])
    return torch.from_numpy(np.cumprod(1 - betas))


def test_learned_time_embedding_takes_integer_timesteps(tmp_path, saved):
    random_unet(C, time_embedding_type="learned", num_train_timesteps=1000).save_pretrained(tmp_path)
    shutil.copy(saved["eps"] / "scheduler_config.json", tmp_path)
    x = torch.rand(1, C, SIZE, SIZE, generator=torch.Generator().manual_seed(6))
    with pytest.raises(ConfigError, match="t_mode=nearest"):
        load_prior(tmp_path).denoise(x, 0.1)
    prior = load_prior(tmp_path, t_mode="nearest")
    unet, _ = reference(tmp_path, "eps")
    x_t, t = 2 * x - 1, int(prior.t_of_sigma(0.1))
    with torch.no_grad():
        assert err(prior.eps(x_t, float(t)), unet(x_t, t).sample) <= TOL


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"])
def test_schedule_kinds_in_float64(kind):
    T, b0, b1 = 1000, 0.00085, 0.012
    sched = DDPMSchedule(b0, b1, T, kind)
    assert torch.allclose(sched.alphas_cumprod, numpy_alphas_cumprod(kind, b0, b1, T), rtol=1e-12, atol=0)
    theirs = diffusers.DDPMScheduler(num_train_timesteps=T, beta_start=b0, beta_end=b1, beta_schedule=kind)
    assert_float32_close(sched.alphas_cumprod, theirs.alphas_cumprod.double())
    assert DDPMSchedule.from_dict(sched.to_dict()).alphas_cumprod.equal(sched.alphas_cumprod)


def test_trained_betas_table(tmp_path):
    save(tmp_path, "eps")
    betas = np.linspace(1e-4, 0.03, 500) ** 1.1
    cfg = json.loads((tmp_path / "scheduler_config.json").read_text())
    cfg.update(trained_betas=betas.tolist(), num_train_timesteps=500)
    (tmp_path / "scheduler_config.json").write_text(json.dumps(cfg))
    prior = load_prior(tmp_path)
    assert prior.schedule.kind == "table" and prior.schedule.num_steps == 500
    assert torch.allclose(prior.schedule.betas, torch.from_numpy(betas), rtol=0, atol=0)
    assert DDPMSchedule.from_dict(prior.card["schedule"]).betas.equal(prior.schedule.betas)
    with pytest.raises(ConfigError, match="kind='table'"):
        DDPMSchedule(kind="table")


def test_bin_weights_and_fp16_variant_load(tmp_path, saved):
    net = random_unet(C)
    bin_dir, fp16_dir = tmp_path / "bin", tmp_path / "fp16"
    net.save_pretrained(bin_dir, safe_serialization=False)
    net.save_pretrained(tmp_path / "sharded", max_shard_size="300KB")
    net.half().save_pretrained(fp16_dir, variant="fp16")  # (in place: net is fp16 from here)
    for d in (bin_dir, fp16_dir):
        shutil.copy(saved["eps"] / "scheduler_config.json", d)
    assert (bin_dir / "diffusion_pytorch_model.bin").is_file()
    x_t, t = torch.randn(1, C, SIZE, SIZE, generator=torch.Generator().manual_seed(4)), torch.tensor([77.0])
    expected = load_prior(saved["eps"]).eps(x_t, t)
    assert err(load_prior(bin_dir).eps(x_t, t), expected) <= TOL  # same weights, read by torch.load(weights_only)
    with pytest.raises(CheckpointError, match="variant fp16"):
        load_prior(saved["eps"], variant="fp16")
    sharded = tmp_path / "sharded"
    shutil.copy(saved["eps"] / "scheduler_config.json", sharded)
    assert len(list(sharded.glob("*.safetensors"))) > 1 and (sharded / "diffusion_pytorch_model.safetensors.index.json").is_file()
    assert err(load_prior(sharded).eps(x_t, t), expected) <= TOL
    half = load_prior(fp16_dir, variant="fp16")
    assert next(half.net.parameters()).dtype == torch.float32
    assert float((half.eps(x_t, t) - expected).abs().max()) < 0.05  # fp16-rounded weights, same network


def test_one_diffusion_solver_end_to_end(saved):
    from invlab.solvers.diffpir import DiffPIR
    from invlab.solvers.dps import DPS

    prior = load_prior(saved["v_learned"])
    task = build(OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "task" / "deblur.yaml"),
                                       {"operator": {"kernel_size": 5, "kernel_std": 1.0}}))
    x = torch.rand(2, C, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    A, y = task.measure(x, [0, 1])
    for solver in (DPS(steps=3), DiffPIR(steps=3)):
        prior.stats.reset()
        res = solver(y, A, prior, generator=torch.Generator().manual_seed(0))
        assert res.x.shape == x.shape and torch.isfinite(res.x).all() and 0 <= res.x.min() <= res.x.max() <= 1
        assert res.nfe == 3


def test_errors_are_one_sentence(tmp_path, saved):
    with pytest.raises(CheckpointError, match="not found"):
        load_prior(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no UNet config.json"):
        load_prior(empty)
    no_sched = tmp_path / "no_sched"
    random_unet(C).save_pretrained(no_sched)
    with pytest.raises(CheckpointError, match="no scheduler_config.json"):
        load_prior(no_sched)
    (no_sched / "scheduler_config.json").write_text(json.dumps({"_class_name": "EulerDiscreteScheduler"}))
    with pytest.raises(ConfigError, match="EulerDiscreteScheduler"):
        load_prior(no_sched)
    (no_sched / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler",
                                                                 "rescale_betas_zero_snr": True}))
    with pytest.raises(ConfigError, match="rescale_betas_zero_snr"):
        load_prior(no_sched)
    # weights that do not fit the config: named keys, never a random init
    shutil.copy(saved["eps"] / "scheduler_config.json", no_sched)
    cfg = json.loads((no_sched / "config.json").read_text())
    (no_sched / "config.json").write_text(json.dumps({**cfg, "block_out_channels": [16, 48]}))
    with pytest.raises(CheckpointError, match="does not match the declared architecture.*wrong-shape"):
        load_prior(no_sched)
    (no_sched / "config.json").write_text(json.dumps({**cfg, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ConfigError, match="UNet2DConditionModel"):
        load_prior(no_sched)
    for over, what in ((dict(num_class_embeds=4), "class-conditional"), (dict(time_embedding_type="fourier"), "Fourier")):
        d = tmp_path / what
        random_unet(C, **over).save_pretrained(d)
        shutil.copy(saved["eps"] / "scheduler_config.json", d)
        with pytest.raises(ConfigError, match=what):
            load_prior(d)
    prior = load_prior(saved["eps"])
    with pytest.raises(ShapeError, match="divisible by 2"):
        prior.denoise(torch.rand(1, C, 15, 16), 0.1)
    with pytest.raises(ShapeError, match="3-channel"):
        prior.denoise(torch.rand(1, 1, 16, 16), 0.1)


@pytest.mark.slow
def test_run_py_as_typed(tmp_path, saved):
    """The README command, as a user types it (a subprocess): DPS on a colour image folder through prior=diffusers."""
    import csv
    import subprocess
    import sys

    from PIL import Image

    from helpers_engine import cli_env

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(images / f"{i}.png")
    run_dir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "run.py"), "solver=dps", "task=deblur", "prior=diffusers",
           f"prior.path={saved['v_learned']}", "data=folder", f"data.path={images}", "data.grayscale=false",
           "data.size=32", "solver.steps=3", "logger=none", f"hydra.run.dir={run_dir}"]
    out = subprocess.run(cmd, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(run_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["ok", "ok"] and {r["nfe"] for r in rows} == {"3"}
