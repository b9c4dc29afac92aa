"""ADM / guided-diffusion checkpoints: the published architectures key for key, the reference outputs of the
small fixtures through the public config path, the schedule, and the loader's refusals.

Fixtures (tests/fixtures/interop/, provenance in its README): `adm_manifests.json` holds the key→shape tables
of ffhq_10m.pt and 256x256_diffusion_uncond.pt as the reference code builds them; `adm_small_{a,b,c}` are
random-weight state dicts in the published format with the reference implementation's outputs.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from invlab.errors import CheckpointError, ConfigError
from invlab.priors.zoo.adm import PRESETS, build_adm, create_model_kwargs
from invlab.utils.config import build

FIX = Path(__file__).parent / "fixtures" / "interop"
CONF = str(Path(__file__).resolve().parents[1] / "conf")
TOL = 1e-5
MANIFEST = json.loads((FIX / "adm_manifests.json").read_text())["checkpoints"]
PUBLISHED = {"ffhq": "ffhq_10m.pt", "imagenet": "256x256_diffusion_uncond.pt"}


def compose_prior(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=["solver=dps", *overrides]).prior


def arch_overrides(kwargs: dict) -> list[str]:
    """io['kwargs'] (guided-diffusion create_model names) as command-line overrides, the way a user types them."""
    out = []
    for k, v in kwargs.items():
        v = f'"{v}"' if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else v
        out.append(f"prior.arch.{k}={v}")
    return out


def small_prior(name: str, path: Path | None = None):
    io = torch.load(FIX / f"adm_small_{name}_io.pt", weights_only=True)
    ckpt = path or FIX / f"adm_small_{name}_state_dict.pt"
    return build(compose_prior("prior=adm", f"prior.checkpoint={ckpt}", *arch_overrides(io["kwargs"]))), io


@pytest.mark.parametrize("preset", ["ffhq", "imagenet"])
def test_published_architecture_matches_the_manifest_key_for_key(preset):
    table = MANIFEST[PUBLISHED[preset]]
    assert create_model_kwargs(preset, None) == {k: v for k, v in table["create_model_kwargs"].items()
                                                 if k not in ("use_checkpoint", "use_fp16")}
    with torch.device("meta"):
        net = build_adm(preset)
    got = [(k, list(v.shape)) for k, v in net.state_dict().items()]
    want = [(k, list(v)) for k, v in table["state_dict"].items()]
    assert got == want  # same keys, same shapes, same order
    assert sum(p.numel() for p in net.parameters()) == table["num_parameters"]


@pytest.mark.parametrize("name", ["a", "b", "c"])
def test_small_fixture_reproduces_the_reference_output(name):
    prior, io = small_prior(name)
    unet = prior.net
    with torch.no_grad():
        out = unet.full(io["x"], io["t"])
        out_f = unet.full(io["x"], io["t_float"])
        eps = prior.eps(io["x"], io["t"])
    assert (out - io["out"]).abs().max() <= TOL
    assert (out_f - io["out_t_float"]).abs().max() <= TOL  # fractional t (PnP-DM's c_noise)
    c = io["x"].shape[1]
    assert torch.equal(eps, out[:, :c])                        # ε = first C channels (learn_sigma or not)
    assert io["out"].shape[1] == (2 * c if io["kwargs"]["learn_sigma"] else c)
    x = io["x"].clone().requires_grad_(True)
    (unet.full(x, io["t"]) * io["g"]).sum().backward()         # autograd through the net, as DPS uses it
    assert (x.grad - io["grad_x"]).abs().max() <= TOL


def test_schedule_is_the_float64_linear_table_and_tweedie_uses_it():
    prior, io = small_prior("a")
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    abar = np.cumprod(1 - betas)
    assert prior.schedule.alphas_cumprod.dtype == torch.float64
    np.testing.assert_allclose(prior.schedule.alphas_cumprod.numpy(), abar, rtol=1e-13)
    assert abs(abar[0] - 0.9999) < 1e-12 and abs(abar[-1] - 4.0358e-05) < 1e-8
    t = io["t"]
    with torch.no_grad():
        x0 = prior.x0(io["x"], t)
    a = torch.as_tensor(abar[t.numpy()], dtype=torch.float64).view(-1, 1, 1, 1)
    eps = io["out"][:, :3].double()
    want = (1 / a).sqrt() * io["x"].double() - (1 / a - 1).sqrt() * eps  # guided-diffusion's _predict_xstart_from_eps
    assert (x0.double() - want).abs().max() <= 1e-4 * want.abs().max()


def test_denoise_in_image_units_is_tweedie_on_the_model_scale():
    """denoise(x, σ) with x in [0, 1]: the net sees √ᾱ (2x − 1) at σ_t = 2σ, and x̂ = x − σ ε̂."""
    prior, io = small_prior("c")
    x = (io["x"][:1].clamp(-1, 1) + 1) / 2
    sigma = 0.1
    t = prior.t_of_sigma(sigma)
    a = prior.schedule.alpha_bar(t).float().view(-1, 1, 1, 1)
    with torch.no_grad():
        want = x - sigma * prior.net(a.sqrt() * (2 * x - 1), t)
        got = prior.denoise(x, sigma)
    assert (got - want).abs().max() <= TOL


def test_sizes_that_are_not_a_multiple_are_padded_circularly():
    prior, io = small_prior("b")
    assert prior.net.unet.multiple == 4  # three levels
    x = io["x"][:1, :, :30, :27]
    xp = torch.nn.functional.pad(x, (0, 1, 0, 2), mode="circular")  # to 32 × 28
    with torch.no_grad():
        assert torch.equal(prior.net(x, io["t"][:1]), prior.net.unet(xp, io["t"][:1])[:, :3, :30, :27])


def write(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("wrap", ["state_dict", "ema", "params", "module", "deepinv"])
def test_wrapped_or_prefixed_state_dicts_load(tmp_path, wrap):
    sd = torch.load(FIX / "adm_small_a_state_dict.pt", weights_only=True)
    obj = {"module": {f"module.{k}": v for k, v in sd.items()},
           "deepinv": {**sd, "sqrt_alphas_cumprod": torch.ones(1000), "sqrt_1m_alphas_cumprod": torch.ones(1000)},
           }.get(wrap, {wrap: sd, "step": torch.tensor(7)})
    prior, io = small_prior("a", write(tmp_path / "w.pt", obj))
    with torch.no_grad():
        assert (prior.net.full(io["x"], io["t"]) - io["out"]).abs().max() <= TOL


def test_wrong_architecture_names_the_first_mismatching_keys():
    io = torch.load(FIX / "adm_small_b_io.pt", weights_only=True)
    overrides = arch_overrides(io["kwargs"])
    with pytest.raises(CheckpointError, match=r"does not match the declared architecture.*(missing|unexpected)"):
        build(compose_prior("prior=adm", f"prior.checkpoint={FIX / 'adm_small_a_state_dict.pt'}", *overrides))
    sd = torch.load(FIX / "adm_small_a_state_dict.pt", weights_only=True)
    sd["out.2.weight"] = sd["out.2.weight"][:3]
    with pytest.raises(CheckpointError, match=r"wrong-shape \(out\.2\.weight \(3, 32, 3, 3\) vs \(6, 32, 3, 3\)"):
        small_prior("a", write(Path(pytest.importorskip("tempfile").mkdtemp()) / "s.pt", sd))


class NeedsCode:  # a pickle that names this class cannot load with weights_only=True
    def __init__(self):
        self.w = torch.zeros(1)


def test_a_pickle_that_needs_code_is_refused_in_one_sentence(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": NeedsCode()}, f)
    with pytest.raises(CheckpointError, match="refused: it is a pickle that needs code") as e:
        small_prior("a", path)
    assert "\n" not in str(e.value)
    torch.save({"model": NeedsCode()}, tmp_path / "evil2.pt")
    with pytest.raises(CheckpointError, match="refused"):
        small_prior("a", tmp_path / "evil2.pt")


def test_missing_file_and_bad_arch_keys_are_one_sentence(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        build(compose_prior("prior=adm_ffhq", f"prior.checkpoint={tmp_path / 'nope.pt'}"))
    with pytest.raises(ConfigError, match="needs prior.arch.image_size"):
        create_model_kwargs(None, {"num_channels": 32})
    with pytest.raises(ConfigError, match="unknown ADM preset"):
        create_model_kwargs("celeba", None)
    assert set(PRESETS) == set(PUBLISHED)
