"""KAIR / DPIR DRUNet and DnCNN checkpoints (and deepinv's files of the same networks) as denoiser priors:
`prior=drunet prior.checkpoint=/path/drunet_color.pth`, `prior=dncnn prior.checkpoint=/path/dncnn_25.pth
prior.layout=kair|deepinv`.

The published files are plain state dicts (the reference scripts load them with strict=True); they load into
invlab's own nets (invlab/nets/drunet.py, invlab/nets/dncnn.py) through a key table built from the net, so a
file is accepted only if its keys and shapes are exactly the declared architecture's (common.load_strict).

Which architecture: `prior.preset` if given; else the file name's stem if it is a published name below
(`drunet_color.pth` → preset drunet_color); else it is inferred from the tensors' shapes (channels, widths,
depth), which is how the small test fixtures and files under other names (deepinv's fine-tunes) load.

Conventions (from the reference code; sources in tests/fixtures/interop/README.md):
- DRUNet: input `cat([x, σ map])`, σ in the units of x ∈ [0, 1] (DPIR: noise_level_255 / 255); no global
  residual; bias-free. invlab's `denoise(x, σ)` builds that map, so σ is passed through unchanged. Sizes are
  replicate-padded right/bottom to a multiple of 16 and cropped back, as DPIR's `utils_model.test_pad`
  (modulo 16) does; deepinv runs multiples of 8 (≥ 32) unpadded and DPIR's denoising script splits large
  images into 4 overlapping crops, so near the right/bottom border other tools can differ slightly.
- DnCNN: `out = x − model(x)`; no noise input, σ is ignored. dncnn_15/25/50 are each trained at that one
  noise level (0–255 scale): a call at another σ logs a warning once (`sigma_check=warn`), raises
  (`error`) or passes (`off`); the blind files (gray_blind, color_blind, dncnn3) take any σ.
- deepinv's DnCNN names its convs `in_conv`, `conv_list.{i}`, `out_conv` and returns `out_conv(f) + x`: the
  opposite residual sign, so `out_conv`'s weight and bias are negated on loading. deepinv's DRUNet has
  KAIR's keys exactly.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from invlab.errors import CheckpointError, ConfigError
from invlab.nets.dncnn import DnCNN
from invlab.nets.drunet import DRUNet
from invlab.priors.base import Prior
from invlab.priors.zoo.common import checkpoint_file, load_strict, mismatch, read_state_dict

log = logging.getLogger(__name__)

DPIR = "cszn/DPIR@15bca3fcc1f3cc51a1f99ccf027691e278c19354"
KAIR = "cszn/KAIR@fc1732f4a4514e42ce15e5b3a1e18c828af47a1e"
DEEPINV = "deepinv/deepinv@3f832a7c2a339e0ed91cb16fde554368c362c0d9"
DRUNET_PAD = 16          # DPIR utils_model.test_pad(modulo=16)
DRUNET_SIGMA_255 = (0.0, 50.0)  # KAIR options/train_drunet.json "sigma": [0, 50]
LAYOUTS = ("kair", "deepinv")


@dataclass(frozen=True)
class Preset:
    family: str                    # "drunet" | "dncnn"
    arch: dict                     # invlab net kwargs
    reference: str                 # the reference constructor the published file was loaded into
    source: str                    # repo@commit file where that constructor call is
    sigma_255: float | None = None  # non-blind DnCNN: the one noise level it was trained at (0–255 scale)
    sigma_range_255: tuple | None = None  # the training range of a blind net, where known


def _drunet(c: int) -> Preset:
    return Preset("drunet", dict(in_channels=c, features=(64, 128, 256, 512), blocks=4),
                  f"UNetRes(in_nc={c + 1}, out_nc={c}, nc=[64,128,256,512], nb=4, act_mode='R', "
                  "downsample_mode='strideconv', upsample_mode='convtranspose', bias=False)",
                  f"{DPIR} main_dpir_denoising.py:82 (also main_dpir_deblur.py, main_dpir_sisr.py)",
                  sigma_range_255=DRUNET_SIGMA_255)


def _dncnn(c: int, depth: int, sigma_255: float | None = None) -> Preset:
    return Preset("dncnn", dict(in_channels=c, depth=depth, features=64, bias=True),
                  f"DnCNN(in_nc={c}, out_nc={c}, nc=64, nb={depth}, act_mode='R')",
                  f"{KAIR} main_test_dncnn.py", sigma_255=sigma_255)


# The published files (tests/fixtures/interop/kair_manifests.json holds each one's key→shape table).
PRESETS: dict[str, Preset] = {
    "drunet_gray": _drunet(1), "drunet_color": _drunet(3),
    "dncnn_15": _dncnn(1, 17, 15.0), "dncnn_25": _dncnn(1, 17, 25.0), "dncnn_50": _dncnn(1, 17, 50.0),
    "dncnn_gray_blind": _dncnn(1, 20), "dncnn_color_blind": _dncnn(3, 20), "dncnn3": _dncnn(1, 20),
}


# ---------------------------------------------------------------------------------------------- networks
def build_net(family: str, arch: Mapping[str, Any]) -> nn.Module:
    """invlab's net for a KAIR architecture: DRUNet without global residual, padded as DPIR; DnCNN residual."""
    if family == "drunet":
        return DRUNet(**arch, residual=False, pad_multiple=DRUNET_PAD)
    return DnCNN(**arch, residual=True)


def file_key(invlab_key: str, family: str, layout: str, depth: int = 0) -> str:
    """The name a KAIR (or deepinv) file gives to one of invlab's state-dict keys."""
    if family == "drunet":  # KAIR's UNetRes; deepinv's DRUNet uses the same names
        key = re.sub(r"^(down|up)\.(\d+)\.", lambda m: f"m_{m[1]}{int(m[2]) + 1}.", invlab_key)
        key = re.sub(r"^(head|tail|body)\.", r"m_\1.", key)
        return key.replace(".body.", ".res.")  # a ResBlock's convs: body.{0,2} -> res.{0,2}
    m = re.fullmatch(r"body\.(\d+)\.(weight|bias)", invlab_key)
    if m is None:
        raise CheckpointError(f"DnCNN key {invlab_key!r} has no KAIR/deepinv counterpart (spectral norm?).")
    conv, param = int(m[1]) // 2, m[2]
    if layout == "kair":
        return f"model.{2 * conv}.{param}"
    name = "in_conv" if conv == 0 else "out_conv" if conv == depth - 1 else f"conv_list.{conv - 1}"
    return f"{name}.{param}"


def key_table(net: nn.Module, family: str, layout: str) -> dict[str, str]:
    """file key -> invlab key, for every tensor of `net`, in the net's order."""
    depth = (len(net.body) + 1) // 2 if family == "dncnn" else 0  # convs at body.0, body.2, ...
    return {file_key(k, family, layout, depth): k for k in net.state_dict()}


def sign_flips(family: str, layout: str) -> Callable[[str], bool]:
    """Which file keys change sign on loading: deepinv's DnCNN adds its output (out_conv(f) + x)."""
    flips = family == "dncnn" and layout == "deepinv"
    return lambda key: flips and key.startswith("out_conv.")


def infer_arch(family: str, layout: str, state: Mapping[str, Tensor], path: Path) -> dict[str, Any]:
    """The architecture a state dict of this family and layout describes, read from its tensors' shapes."""
    def need(key: str) -> Tensor:
        if key not in state:
            raise CheckpointError(f"{path} is not a {layout} {family.upper() if family == 'dncnn' else 'DRUNet'} "
                                  f"state dict: it has no {key!r} (first keys: {', '.join(list(state)[:3])})"
                                  f"{_layout_hint(family, layout, state)}.")
        return state[key]

    if family == "drunet":
        head = need("m_head.weight")
        blocks = len({k.split(".")[1] for k in state if k.startswith("m_body.")})
        features = [head.shape[0]] + [need(f"m_down{i}.{blocks}.weight").shape[0] for i in (1, 2, 3)]
        return dict(in_channels=head.shape[1] - 1, features=tuple(int(f) for f in features), blocks=blocks)
    def convs(pattern: str) -> int:  # 4-D weights only: a BatchNorm's 1-D weight is not a conv
        return len([k for k, v in state.items() if re.fullmatch(pattern, k) and v.dim() == 4])

    if layout == "kair":
        first, n_convs, bias = need("model.0.weight"), convs(r"model\.\d+\.weight"), "model.0.bias" in state
    else:
        first, n_convs, bias = need("in_conv.weight"), 2 + convs(r"conv_list\.\d+\.weight"), "in_conv.bias" in state
    if first.dim() != 4:
        raise CheckpointError(f"{path} is not a DnCNN state dict: its first conv weight has shape "
                              f"{tuple(first.shape)}.")
    return dict(in_channels=int(first.shape[1]), depth=n_convs, features=int(first.shape[0]), bias=bias)


def _layout_hint(family: str, layout: str, state: Mapping[str, Tensor]) -> str:
    if family != "dncnn":
        return ""
    if layout == "kair" and "in_conv.weight" in state:
        return "; its keys are deepinv's (in_conv, conv_list, out_conv): pass prior.layout=deepinv"
    if layout == "deepinv" and "model.0.weight" in state:
        return "; its keys are KAIR's (model.N): pass prior.layout=kair"
    return ""


def resolve_preset(family: str, preset: str | None, path: Path) -> str | None:
    """The named preset, or the file name's if it is a published one of this family, else None (infer)."""
    names = [n for n, p in PRESETS.items() if p.family == family]
    if preset is not None:
        if preset not in names:
            raise ConfigError(f"unknown {family} preset {preset!r}; choose one of {', '.join(names)} or null "
                              f"(then the file name or the tensors' shapes decide).")
        return preset
    return path.stem if path.stem in names else None


def load_net(family: str, checkpoint, preset: str | None = None,
             layout: str = "kair") -> tuple[nn.Module, str | None, dict]:
    """(net in eval mode, preset name or None, arch) for a KAIR/DPIR or deepinv file of `family`."""
    if layout not in LAYOUTS:
        raise ConfigError(f"prior.layout must be one of {', '.join(LAYOUTS)}, got {layout!r}.")
    path = checkpoint_file(checkpoint, family, reads="KAIR/DPIR/deepinv files")
    state = read_state_dict(path)
    name = resolve_preset(family, preset, path)
    arch = dict(PRESETS[name].arch) if name else infer_arch(family, layout, state, path)
    try:
        with torch.device("meta"):  # the file's tensors are adopted (assign=True): no random init to pay for
            net = build_net(family, arch)
    except (ValueError, TypeError) as e:  # shapes that describe no network (e.g. a 1-conv DnCNN)
        raise CheckpointError(f"{path} does not describe a {family} network ({str(e).rstrip('.')}).") from e
    table = key_table(net, family, layout)
    expected = {k: tuple(net.state_dict()[v].shape) for k, v in table.items()}
    what = f"{name or family} ({layout} layout: {', '.join(f'{k}={v}' for k, v in arch.items())})"
    problem = mismatch(expected, {k: tuple(v.shape) for k, v in state.items()})
    if problem:
        raise CheckpointError(f"{path} does not match the declared architecture {what}: {problem}"
                              f"{_layout_hint(family, layout, state)}.")
    flip = sign_flips(family, layout)
    converted = {table[k]: (-v if flip(k) else v) for k, v in state.items()}
    net = load_strict(net, converted, path, what)
    return net, name, arch


# ---------------------------------------------------------------------------------------------- priors
class KairDenoiser(Prior):
    """A KAIR/DPIR (or deepinv) denoiser file as a prior: `denoise(x, σ)` with x and σ in [0, 1] units."""

    family = ""
    differentiable = True

    def __init__(self, checkpoint: str, preset: str | None = None, layout: str = "kair",
                 device: str | None = None, **speed):
        super().__init__()
        net, self.preset, self.arch = load_net(self.family, checkpoint, preset, layout)
        net.requires_grad_(False)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.net = net.to(device) if device else net
        self.checkpoint, self.layout = str(checkpoint), layout
        self.channels = int(self.arch["in_channels"])
        spec = PRESETS.get(self.preset or "")
        self.provenance = f"{spec.reference} from {spec.source}" if spec else "architecture inferred from the file"
        self.card: dict[str, Any] = {"preset": self.preset, "layout": layout, "provenance": self.provenance}
        self.configure_speed(**speed)  # prior.compile / compile_mode / precision / channels_last (priors/speed.py)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()  # a published prior is never trained in place
        return self

    def describe(self) -> str:
        return f"{self.family} ({self.preset or 'inferred'}, {self.channels}-channel, {self.layout}) {self.checkpoint}"


class DRUNetPrior(KairDenoiser):
    """`prior=drunet`: one net for all σ, told σ through its noise-map channel."""

    family = "drunet"

    def __init__(self, checkpoint: str, preset: str | None = None, layout: str = "kair",
                 device: str | None = None, **speed):
        super().__init__(checkpoint, preset, layout, device, **speed)
        spec = PRESETS.get(self.preset or "")
        if spec and spec.sigma_range_255:
            self.card["sigma_range"] = [s / 255 for s in spec.sigma_range_255]  # read by ood.py's range check
        self._warned = False

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        hi = self.card.get("sigma_range", [0, None])[1]
        if hi is not None and not self._warned and bool((sigma > hi * 1.02).any()):
            self._warned = True
            log.warning("%s was trained for σ ≤ %g/255 but is called at σ = %.4g/255: it extrapolates there.",
                        self.describe(), hi * 255, float(sigma.max()) * 255)
        return self.net_call(x, sigma)


class DnCNNPrior(KairDenoiser):
    """`prior=dncnn`: no noise input. A non-blind file (dncnn_15/25/50, or `trained_sigma_255`) is checked
    against the σ it is called at; `sigma_check` = warn (once) | error | off."""

    family = "dncnn"
    TOLERANCE_255 = 0.5  # half a grey level: σ values computed in float arithmetic still match

    def __init__(self, checkpoint: str, preset: str | None = None, layout: str = "kair",
                 device: str | None = None, trained_sigma_255: float | None = None, sigma_check: str = "warn",
                 **speed):
        super().__init__(checkpoint, preset, layout, device, **speed)
        if sigma_check not in ("warn", "error", "off"):
            raise ConfigError(f"prior.sigma_check must be warn, error or off, got {sigma_check!r}.")
        spec = PRESETS.get(self.preset or "")
        if trained_sigma_255 is None and spec is not None:
            trained_sigma_255 = spec.sigma_255
        self.trained_sigma_255 = float(trained_sigma_255) if trained_sigma_255 else None
        self.sigma_check, self._warned = sigma_check, False
        if self.trained_sigma_255:
            self.card["sigma_255"] = self.trained_sigma_255

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        s0 = self.trained_sigma_255
        if s0 and self.sigma_check != "off" and not (self._warned and self.sigma_check == "warn"):
            off = (sigma * 255 - s0).abs() > self.TOLERANCE_255
            if bool(off.any()):
                msg = (f"{self.describe()} is trained at σ = {s0:g}/255 only and ignores σ, but is called at "
                       f"σ = {float(sigma[off][0]) * 255:.4g}/255")
                if self.sigma_check == "error":
                    raise ConfigError(f"{msg}; use a blind file (dncnn_gray_blind.pth), prior=drunet, or "
                                      f"prior.sigma_check=warn.")
                self._warned = True
                log.warning("%s: its output is the σ = %g/255 denoiser's (prior.sigma_check=off silences this).",
                            msg, s0)
        return self.net_call(x)
