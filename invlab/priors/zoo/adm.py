"""ADM / guided-diffusion checkpoints as diffusion priors: `prior=adm_ffhq`, `prior=adm_imagenet`, or
`prior=adm prior.arch.<create_model kwarg>=...` for any guided-diffusion configuration.

The published files are plain state dicts of guided-diffusion's `UNetModel` (the repositories below load them
with strict=True); they load into invlab's own `ADMUNet` (invlab/nets/adm.py) key for key. Conventions, as in
the reference code (tests/fixtures/interop/README.md has the sources):
- images enter the network on [-1, 1] (DiffusionPrior converts from invlab's [0, 1]);
- the schedule is DDPM's linear β 1e-4 → 0.02 over 1000 steps, computed in float64 (DDPMSchedule's default);
- with learn_sigma the network returns 2·C channels: ε is the first C (the variance channels are unused by
  invlab's samplers, which choose their own variances; `ADMEps.full` keeps them reachable);
- the input size must be a multiple of 2^(levels−1) (32 for the 256² models): other sizes are padded
  circularly to the next multiple and cropped back, as deepinv's DiffUNet does;
- a file saved from deepinv's DiffUNet carries two extra schedule buffers (`sqrt_alphas_cumprod`,
  `sqrt_1m_alphas_cumprod`); they are dropped, every other key must match exactly.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invlab.errors import ConfigError
from invlab.nets.adm import ADMUNet, parse_create_model
from invlab.priors.diffusion import DiffusionPrior
from invlab.priors.schedule import DDPMSchedule
from invlab.priors.zoo.common import checkpoint_file, load_strict, read_state_dict

log = logging.getLogger(__name__)

# The published configurations, as guided-diffusion `create_model` keyword arguments (the key→shape tables
# of both files are in tests/fixtures/interop/adm_manifests.json; the tests check them exactly).
PRESETS: dict[str, dict[str, Any]] = {
    "ffhq": dict(  # ffhq_10m.pt: DPS configs/model_config.yaml (= DPnP, DMPlug; DiffPIR and PnP-DM agree)
        image_size=256, num_channels=128, num_res_blocks=1, channel_mult="", learn_sigma=True, class_cond=False,
        attention_resolutions="16", num_heads=4, num_head_channels=64, num_heads_upsample=-1,
        use_scale_shift_norm=True, dropout=0.0, resblock_updown=True, use_new_attention_order=False),
    "imagenet": dict(  # 256x256_diffusion_uncond.pt: guided-diffusion README MODEL_FLAGS (= DPS, DPnP, DiffPIR)
        image_size=256, num_channels=256, num_res_blocks=2, channel_mult="", learn_sigma=True, class_cond=False,
        attention_resolutions="32,16,8", num_heads=4, num_head_channels=64, num_heads_upsample=-1,
        use_scale_shift_norm=True, dropout=0.0, resblock_updown=True, use_new_attention_order=False),
}
PROVENANCE = {
    "ffhq": "ffhq_10m.pt (DPS Google-Drive folder; DiffPIR's diffusion_ffhq_10m.pt): FFHQ 256², 93,563,910 "
            "parameters; config from DPS2022/diffusion-posterior-sampling@effbde7 configs/model_config.yaml",
    "imagenet": "256x256_diffusion_uncond.pt (openai/guided-diffusion@22e0df8 README): ImageNet 256² "
                "unconditional, 552,814,086 parameters",
}
DEEPINV_BUFFERS = ("sqrt_alphas_cumprod", "sqrt_1m_alphas_cumprod")


def create_model_kwargs(preset: str | None, arch: Mapping | None) -> dict[str, Any]:
    """The preset's create_model kwargs overridden by `arch` (any create_model keyword name)."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown ADM preset {preset!r}; choose one of {', '.join(PRESETS)} or null with prior.arch.")
    kwargs = dict(PRESETS[preset]) if preset else {}
    kwargs.update({k: v for k, v in dict(arch or {}).items() if v is not None})
    for key in ("image_size", "num_channels", "num_res_blocks"):
        if key not in kwargs:
            raise ConfigError(f"the ADM architecture needs prior.arch.{key} (guided-diffusion's create_model name) "
                              f"or a preset (prior=adm_ffhq / adm_imagenet).")
    try:
        parse_create_model(**kwargs)
    except TypeError as e:
        raise ConfigError(f"prior.arch has a key guided-diffusion's create_model does not take ({e}).") from e
    return kwargs


class ADMEps(nn.Module):
    """ε(x_t, t) of an ADM UNet: the first C output channels, with circular padding to the UNet's multiple."""

    def __init__(self, unet: ADMUNet):
        super().__init__()
        self.unet = unet
        self.in_channels = unet.in_channels

    def full(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """All output channels (ε and, with learn_sigma, the variance interpolation), cropped to x's size."""
        h, w = x.shape[-2:]
        m = self.unet.multiple
        ph, pw = (-h) % m, (-w) % m
        xp = F.pad(x, (0, pw, 0, ph), mode="circular") if ph or pw else x
        return self.unet(xp, t, y)[..., :h, :w]

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self.full(x, t, y)[:, : self.in_channels]


def build_adm(preset: str | None = "ffhq", arch: Mapping | None = None) -> ADMUNet:
    return ADMUNet(**parse_create_model(**create_model_kwargs(preset, arch)))


def load_adm(checkpoint, preset: str | None = "ffhq", arch: Mapping | None = None, mmap: bool = True) -> ADMUNet:
    """An ADMUNet with the file's weights, strictly (one sentence naming the first mismatching keys)."""
    path = checkpoint_file(checkpoint, "ADM", reads="guided-diffusion UNet state dicts")
    kwargs = create_model_kwargs(preset, arch)
    with torch.device("meta"):  # no random init: the file's (memory-mapped) tensors become the parameters
        net = ADMUNet(**parse_create_model(**kwargs))
    described = f"ADM {preset or 'custom'} ({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
    state = read_state_dict(path, mmap=mmap)
    return load_strict(net, state, path, described, ignore=lambda k: k in DEEPINV_BUFFERS)


def adm_prior(checkpoint: str | None = None, preset: str | None = "ffhq", arch: Mapping | None = None,
              device: str | None = None, t_mode: str = "continuous", beta_start: float = 1e-4,
              beta_end: float = 0.02, num_steps: int = 1000, **speed) -> DiffusionPrior:
    """The Hydra target of conf/prior/adm*.yaml: a DiffusionPrior over a published ADM checkpoint."""
    unet = load_adm(checkpoint, preset, arch)
    kwargs = create_model_kwargs(preset, arch)
    if unet.num_classes is not None:
        raise ConfigError("class-conditional ADM models (class_cond=true) need labels, which invlab's samplers "
                          "do not pass; use an unconditional checkpoint.")
    size = int(kwargs["image_size"])
    prior = DiffusionPrior(net=ADMEps(unet), schedule=DDPMSchedule(beta_start, beta_end, num_steps),
                           channels=unet.in_channels, image_size=(size, size), device=device, t_mode=t_mode,
                           **speed)  # prior.compile / compile_mode / precision / channels_last (priors/speed.py)
    prior.checkpoint = str(checkpoint)
    prior.card = {"kind": "diffusion", "family": "adm", "preset": preset, "create_model_kwargs": kwargs,
                  "provenance": PROVENANCE.get(preset or "", "user configuration"), "image_size": [size, size],
                  "channels": unet.in_channels, "schedule": prior.schedule.to_dict(),
                  "parameters": sum(p.numel() for p in unet.parameters())}
    log.info("loaded ADM %s from %s (%d parameters)", preset or "custom", checkpoint, prior.card["parameters"])
    return prior
