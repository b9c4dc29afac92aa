"""KAIR/DPIR (and deepinv) DRUNet and DnCNN files: the published architectures key for key, the reference outputs
of the small fixtures through the public config path (`prior=drunet` / `prior=dncnn`), deepinv's DnCNN layout
and sign, DRUNet's padding and the noise-level conventions, and the loader's refusals.

Fixtures (tests/fixtures/interop/, provenance in its README): `kair_manifests.json` holds the key→shape tables
of the published files as KAIR's classes build them; `drunet_small_*` / `dncnn_small_*` are random-weight state
dicts in KAIR's format with KAIR's outputs. The references below (KAIR key tables, a functional UNetRes, the
deepinv renaming) are written here from the manifest and the reference code's description, not from invlab.
"""
from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from invlab.errors import CheckpointError, ConfigError
from invlab.priors.zoo.kair import PRESETS, build_net, key_table
from invlab.utils.config import build

FIX = Path(__file__).parent / "fixtures" / "interop"
REPO = Path(__file__).resolve().parents[1]
TOL = 1e-5
MANIFESTS = json.loads((FIX / "kair_manifests.json").read_text())
PUBLISHED = MANIFESTS["checkpoints"]
DEEPINV = MANIFESTS["deepinv_comparison"]["per_file"]


def prior(family: str, checkpoint, *overrides: str):
    """The prior a user gets from `python run.py prior=<family> prior.checkpoint=<file> <overrides>`."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        node = compose("config", overrides=[f"prior={family}", f"prior.checkpoint={checkpoint}",
                                            *[f"prior.{o}" for o in overrides]]).prior
    return build(node)


def kair_unetres_shapes(in_nc: int, out_nc: int, nc: list, nb: int) -> dict[str, list]:
    """KAIR UNetRes(bias=False) key→shape table, in module order (m_head, m_down1-3, m_body, m_up3-1, m_tail)."""
    res = lambda p, c: {f"{p}.res.{r}.weight": [c, c, 3, 3] for r in (0, 2)}
    t = {"m_head.weight": [nc[0], in_nc, 3, 3]}
    for i in (1, 2, 3):
        for j in range(nb):
            t |= res(f"m_down{i}.{j}", nc[i - 1])
        t[f"m_down{i}.{nb}.weight"] = [nc[i], nc[i - 1], 2, 2]
    for j in range(nb):
        t |= res(f"m_body.{j}", nc[3])
    for i in (3, 2, 1):
        t[f"m_up{i}.0.weight"] = [nc[i], nc[i - 1], 2, 2]  # ConvTranspose2d: (in, out, kH, kW)
        for j in range(1, nb + 1):
            t |= res(f"m_up{i}.{j}", nc[i - 1])
    t["m_tail.weight"] = [out_nc, nc[0], 3, 3]
    return t


def kair_unetres(sd: dict, model_input: torch.Tensor) -> torch.Tensor:
    """KAIR UNetRes.forward (x1 = head; x2..x4 = down1..3; body; up3(x + x4); up2(x + x3); up1(x + x2);
    tail(x + x1)), written with torch.nn.functional on the file's own keys."""
    nb = len({k.split(".")[1] for k in sd if k.startswith("m_body.")})
    res = lambda h, p: h + F.conv2d(F.relu(F.conv2d(h, sd[f"{p}.res.0.weight"], padding=1)), sd[f"{p}.res.2.weight"],
                                    padding=1)
    hs = [F.conv2d(model_input, sd["m_head.weight"], padding=1)]
    for i in (1, 2, 3):
        h = hs[-1]
        for j in range(nb):
            h = res(h, f"m_down{i}.{j}")
        hs.append(F.conv2d(h, sd[f"m_down{i}.{nb}.weight"], stride=2))
    h = hs[3]
    for j in range(nb):
        h = res(h, f"m_body.{j}")
    for i in (3, 2, 1):
        h = F.conv_transpose2d(h + hs[i], sd[f"m_up{i}.0.weight"], stride=2)
        for j in range(1, nb + 1):
            h = res(h, f"m_up{i}.{j}")
    return F.conv2d(h + hs[0], sd["m_tail.weight"], padding=1)


def to_deepinv_dncnn(sd: dict) -> dict:
    """KAIR DnCNN keys -> deepinv's by position (first conv in_conv, last out_conv, the rest conv_list.{i}),
    out_conv negated: deepinv returns out_conv(f) + x where KAIR returns x − model(x)."""
    convs = sorted({int(k.split(".")[1]) for k in sd})
    names = {c: "in_conv" if n == 0 else "out_conv" if n == len(convs) - 1 else f"conv_list.{n - 1}"
             for n, c in enumerate(convs)}
    out = {}
    for k, v in sd.items():
        _, c, param = k.split(".")
        name = names[int(c)]
        out[f"{name}.{param}"] = -v if name == "out_conv" else v.clone()
    return out


def random_file(path: Path, shapes: dict, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    torch.save({k: 0.05 * torch.randn(s, generator=g) for k, s in shapes.items()}, path)
    return path


@pytest.fixture(scope="module")
def drunet_io():
    return torch.load(FIX / "drunet_small_io.pt", weights_only=True)


@pytest.fixture(scope="module")
def dncnn_io():
    return torch.load(FIX / "dncnn_small_io.pt", weights_only=True)


def small_sd(family: str) -> dict:
    return torch.load(FIX / f"{family}_small_state_dict.pt", weights_only=True)


# ------------------------------------------------------------------------------------------- (a) manifests
@pytest.mark.parametrize("file", list(PUBLISHED))
def test_published_architecture_matches_the_manifest_key_for_key(file):
    entry, name = PUBLISHED[file], file.removesuffix(".pth")
    kw, preset = entry["constructor_kwargs"], PRESETS[name]
    # the preset is the reference constructor's configuration (KAIR in_nc counts DRUNet's noise-map channel)
    if preset.family == "drunet":
        assert preset.arch == dict(in_channels=kw["in_nc"] - 1, features=tuple(kw["nc"]), blocks=kw["nb"])
        assert kw["out_nc"] == kw["in_nc"] - 1 and kw["bias"] is False
        assert kair_unetres_shapes(kw["in_nc"], kw["out_nc"], kw["nc"], kw["nb"]) == entry["state_dict"]
    else:
        assert preset.arch == dict(in_channels=kw["in_nc"], depth=kw["nb"], features=kw["nc"], bias=True)
        assert kw["out_nc"] == kw["in_nc"] and kw["act_mode"] == "R"
    with torch.device("meta"):
        net = build_net(preset.family, preset.arch)
    table = key_table(net, preset.family, "kair")
    sd = net.state_dict()
    got = {k: list(sd[v].shape) for k, v in table.items()}
    assert got == entry["state_dict"]  # the same key→shape table (invlab lists DRUNet's decoder shallow-first)
    assert sum(p.numel() for p in net.parameters()) == entry["num_parameters"]
    assert len(got) == entry["num_tensors"]
    if file in DEEPINV and "positional_key_correspondence_kair_to_deepinv" in DEEPINV[file]:
        corr = DEEPINV[file]["positional_key_correspondence_kair_to_deepinv"]
        assert list(key_table(net, "dncnn", "deepinv")) == [corr[k] for k in entry["state_dict"]]
        assert to_deepinv_dncnn({k: torch.zeros(1) for k in entry["state_dict"]}).keys() == set(corr.values())
    elif file in DEEPINV:  # deepinv's DRUNet: KAIR's keys exactly
        assert DEEPINV[file]["identical_keys_and_shapes"] and list(key_table(net, "drunet", "deepinv")) == list(table)


# ------------------------------------------------------------------------------------------- (b) outputs
def test_drunet_small_fixture_reproduces_the_reference_output(drunet_io):
    io = drunet_io
    assert kair_unetres_shapes(**{k: io["kwargs"][k] for k in ("in_nc", "out_nc", "nc", "nb")}) == \
        {k: list(v.shape) for k, v in small_sd("drunet").items()}
    p = prior("drunet", FIX / "drunet_small_state_dict.pt")
    assert p.channels == 3 and p.preset is None and p.arch["features"] == (8, 16, 32, 64)
    # σ convention: the map is σ in [0, 1] image units (DPIR noise_level/255), the last input channel
    torch.testing.assert_close(io["sigma"], io["sigma_255"] / 255)
    torch.testing.assert_close(io["model_input"][:, 3:], io["sigma"].view(-1, 1, 1, 1).expand(-1, 1, 32, 32))
    with torch.no_grad():
        err = (p.denoise(io["x"], io["sigma"]) - io["out"]).abs().max().item()
        err_odd = (p.denoise(io["x_odd"], io["sigma"]) - io["out_odd_pad16"]).abs().max().item()
    assert err <= TOL and err_odd <= TOL, (err, err_odd)  # 30×27: replicate-padded to 32×32, cropped
    # the test's own functional reference agrees with the fixture, so it can judge other sizes below
    assert (kair_unetres(small_sd("drunet"), io["model_input"]) - io["out"]).abs().max() <= TOL


def test_drunet_pads_to_a_multiple_of_16_as_dpir_test_pad(drunet_io):
    """40×44 (H a multiple of 8 but not 16): DPIR's test_pad(modulo=16) pads to 48×48; padding to 8 differs."""
    sd, p = small_sd("drunet"), prior("drunet", FIX / "drunet_small_state_dict.pt")
    x = torch.rand(1, 3, 40, 44, generator=torch.Generator().manual_seed(3))
    sigma = 25 / 255
    model_input = torch.cat([x, torch.full((1, 1, 40, 44), sigma)], 1)
    ref16 = kair_unetres(sd, F.pad(model_input, (0, 4, 0, 8), mode="replicate"))[..., :40, :44]
    ref8 = kair_unetres(sd, F.pad(model_input, (0, 4, 0, 0), mode="replicate"))[..., :40, :44]
    with torch.no_grad():
        out = p.denoise(x, sigma)
    assert (out - ref16).abs().max() <= TOL
    assert (ref8 - ref16).abs().max() > 1e-4  # the choice of multiple is visible, so the check above means it


def test_dncnn_small_fixture_reproduces_the_reference_output(dncnn_io):
    p = prior("dncnn", FIX / "dncnn_small_state_dict.pt")
    assert p.arch == dict(in_channels=1, depth=5, features=16, bias=True) and p.trained_sigma_255 is None
    with torch.no_grad():
        out = p.denoise(dncnn_io["x"], 25 / 255)
        assert torch.equal(p.denoise(dncnn_io["x"], 0.3), out)  # DnCNN takes no noise level
    assert (out - dncnn_io["out"]).abs().max() <= TOL


# ------------------------------------------------------------------------------------------- (c) deepinv
def test_deepinv_dncnn_layout_and_sign(tmp_path, dncnn_io):
    sd = small_sd("dncnn")
    path = tmp_path / "dncnn_deepinv.pth"
    torch.save(to_deepinv_dncnn(sd), path)
    p = prior("dncnn", path, "layout=deepinv")
    with torch.no_grad():
        assert (p.denoise(dncnn_io["x"], 0.1) - dncnn_io["out"]).abs().max() <= TOL
    unflipped = {k: (-v if k.startswith("out_conv") else v) for k, v in to_deepinv_dncnn(sd).items()}
    torch.save(unflipped, tmp_path / "unflipped.pth")
    with torch.no_grad():  # without the sign flip the output is wrong: the flip is what the check above proves
        assert (prior("dncnn", tmp_path / "unflipped.pth", "layout=deepinv").denoise(dncnn_io["x"], 0.1)
                - dncnn_io["out"]).abs().max() > 1e-2
    with pytest.raises(CheckpointError, match=r"prior\.layout=deepinv"):  # deepinv keys, kair layout: a hint
        prior("dncnn", path)
    with pytest.raises(CheckpointError, match=r"prior\.layout=kair"):
        prior("dncnn", FIX / "dncnn_small_state_dict.pt", "layout=deepinv")


def test_deepinv_drunet_layout_is_kairs(drunet_io):
    p = prior("drunet", FIX / "drunet_small_state_dict.pt", "layout=deepinv")
    with torch.no_grad():
        assert (p.denoise(drunet_io["x"], drunet_io["sigma"]) - drunet_io["out"]).abs().max() <= TOL


# ------------------------------------------------------------------------------------------- presets by name
def test_published_shape_files_load_by_name_with_their_noise_conventions(tmp_path, caplog):
    """Random tensors of the manifest's shapes, saved under the published names, load through the presets."""
    dn = prior("dncnn", random_file(tmp_path / "dncnn_25.pth", PUBLISHED["dncnn_25.pth"]["state_dict"]))
    assert dn.preset == "dncnn_25" and dn.trained_sigma_255 == 25.0 and dn.channels == 1
    x = torch.rand(1, 1, 12, 12)
    with caplog.at_level(logging.WARNING, logger="invlab.priors.zoo.kair"), torch.no_grad():
        dn.denoise(x, 25 / 255)
        assert not caplog.records  # its own σ: silent
        dn.denoise(x, 15 / 255)
        dn.denoise(x, 10 / 255)
    assert len(caplog.records) == 1 and "25/255" in caplog.text  # once per prior
    strict = prior("dncnn", tmp_path / "dncnn_25.pth", "sigma_check=error")
    with pytest.raises(ConfigError, match="trained at σ = 25/255"):
        strict.denoise(x, 15 / 255)
    blind = prior("dncnn", random_file(tmp_path / "dncnn_color_blind.pth",
                                       PUBLISHED["dncnn_color_blind.pth"]["state_dict"]), "sigma_check=error")
    assert blind.preset == "dncnn_color_blind" and blind.channels == 3
    with torch.no_grad():
        blind.denoise(torch.rand(1, 3, 12, 12), 0.3)  # a blind file takes any σ
    dr = prior("drunet", random_file(tmp_path / "drunet_gray.pth", PUBLISHED["drunet_gray.pth"]["state_dict"]))
    assert dr.preset == "drunet_gray" and dr.card["sigma_range"] == [0.0, 50 / 255]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="invlab.priors.zoo.kair"), torch.no_grad():
        assert dr.denoise(torch.rand(1, 1, 20, 20), 49 / 255).shape == (1, 1, 20, 20)
        assert not caplog.records
        dr.denoise(torch.rand(1, 1, 20, 20), 80 / 255)
    assert "σ ≤ 50/255" in caplog.text
    with pytest.raises(CheckpointError, match="drunet_color"):  # an explicit preset is checked strictly
        prior("drunet", tmp_path / "drunet_gray.pth", "preset=drunet_color")
    with pytest.raises(ConfigError, match="unknown drunet preset"):
        prior("drunet", tmp_path / "drunet_gray.pth", "preset=drunet_rgb")


# ------------------------------------------------------------------------------------------- (d) errors
class NeedsCode:
    """Any class: unpickling an instance needs this module's code."""


def one_sentence(err: BaseException, *fragments: str) -> str:
    msg = str(err)
    assert "\n" not in msg and msg.endswith("."), msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_a_pickle_that_needs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"m_head.weight": torch.zeros(1), "extra": NeedsCode()}, path)
    with pytest.raises(CheckpointError) as info:
        prior("drunet", path)
    one_sentence(info.value, str(path), "refused", "weights_only")


def test_wrong_keys_and_shapes_name_the_first_offenders(tmp_path):
    sd = small_sd("drunet")
    missing = {k: v for k, v in sd.items() if k != "m_tail.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError) as info:
        prior("drunet", tmp_path / "missing.pth")
    one_sentence(info.value, "1 missing (m_tail.weight)")
    extra = dict(sd, **{"m_head.bias": torch.zeros(8), "m_tail.bias": torch.zeros(3)})  # KAIR's bias=True
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError) as info:
        prior("drunet", tmp_path / "extra.pth")
    one_sentence(info.value, "2 unexpected (m_head.bias, m_tail.bias)")
    torch.save(sd, tmp_path / "drunet_color.pth")  # the small net under a published name: the preset's shapes
    with pytest.raises(CheckpointError) as info:
        prior("drunet", tmp_path / "drunet_color.pth")
    one_sentence(info.value, "drunet_color", "wrong-shape (m_head.weight (8, 4, 3, 3) vs (64, 4, 3, 3)")
    bn = dict(small_sd("dncnn"), **{"model.1.running_mean": torch.zeros(16)})  # a DnCNN with BatchNorm
    torch.save(bn, tmp_path / "bn.pth")
    with pytest.raises(CheckpointError) as info:
        prior("dncnn", tmp_path / "bn.pth")
    one_sentence(info.value, "unexpected (model.1.running_mean)")


@pytest.mark.parametrize("wrap", ["state_dict", "params", "ema", "module."])
def test_wrapped_state_dicts_load(tmp_path, wrap, dncnn_io):
    sd = small_sd("dncnn")
    obj = {f"module.{k}": v for k, v in sd.items()} if wrap == "module." else {wrap: sd, "epoch": torch.tensor(3)}
    torch.save(obj, tmp_path / "wrapped.pth")
    with torch.no_grad():
        out = prior("dncnn", tmp_path / "wrapped.pth").denoise(dncnn_io["x"], 0.1)
    assert (out - dncnn_io["out"]).abs().max() <= TOL


def test_bad_options_and_foreign_files_are_one_sentence(tmp_path):
    with pytest.raises(ConfigError) as info:
        prior("dncnn", FIX / "dncnn_small_state_dict.pt", "layout=keras")
    one_sentence(info.value, "kair, deepinv")
    with pytest.raises(ConfigError) as info:
        prior("dncnn", FIX / "dncnn_small_state_dict.pt", "sigma_check=maybe")
    one_sentence(info.value, "warn, error or off")
    from invlab.nets.dncnn import DnCNN
    from invlab.priors.checkpoint import save_checkpoint

    arch = {"_target_": "invlab.nets.dncnn.DnCNN", "in_channels": 1, "depth": 2, "features": 4}
    own = save_checkpoint(tmp_path / "own.safetensors", DnCNN(1, 2, 4), arch, {"recipe": "test"})
    with pytest.raises(CheckpointError) as info:
        prior("dncnn", own)
    one_sentence(info.value, "prior=learned")
    with pytest.raises(CheckpointError) as info:
        prior("drunet", FIX / "dncnn_small_state_dict.pt")  # a DnCNN is not a DRUNet
    one_sentence(info.value, "m_head.weight")


# ------------------------------------------------------------------------------------------- solvers
@pytest.mark.parametrize("solver", ["pnp_hqs", "pnp_admm", "pnp_fista", "red"])
def test_pnp_solvers_run_with_the_kair_priors(solver):
    """A colour deblur with the DRUNet fixture (and the gray DnCNN one) as the prior: finite, NFE counted."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["task=deblur", f"solver={solver}", "solver.iters=2"])
    task, solve = build(cfg.task), build(cfg.solver)
    for family, c in (("drunet", 3), ("dncnn", 1)):
        p = prior(family, FIX / f"{family}_small_state_dict.pt")
        x = torch.rand(1, c, 32, 32, generator=torch.Generator().manual_seed(4))
        A, y = task.measure(x, [0], seed=0)
        res = solve(y, A, p)
        assert res.x.shape == x.shape and torch.isfinite(res.x).all() and res.nfe >= 2


@pytest.mark.slow
def test_pnp_solver_runs_with_a_kair_drunet_through_run_py(tmp_path):
    """`python run.py prior=drunet prior.checkpoint=<KAIR-format file>` with PnP-HQS on one gray test image."""
    path = random_file(tmp_path / "my_drunet.pth", kair_unetres_shapes(2, 1, [8, 16, 32, 64], 1))
    run_dir = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "run.py"), "prior=drunet", f"prior.checkpoint={path}", "data=gray_test",
           "data.limit=1", "data.size=64", "task=deblur", "solver=pnp_hqs", "solver.iters=2", "logger=csv",
           "device=cpu", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = (run_dir / "results.csv").read_text().splitlines()
    header, row = rows[0].split(","), rows[1].split(",")
    assert len(rows) == 2 and row[header.index("status")] in ("ok", "suspect")  # random weights: far from y
    assert int(row[header.index("nfe")]) == 2 and re.fullmatch(r"[\d.]+", row[header.index("psnr")])
