"""diffusers `UNet2DModel` checkpoints as diffusion priors: `prior=diffusers prior.path=/dir`.

`/dir` is what `save_pretrained` writes: the UNet (`config.json` + `diffusion_pytorch_model.safetensors`, or
`.bin`, or sharded with an `.index.json`) in /dir or /dir/unet (a DDPMPipeline folder), and the scheduler's
`scheduler_config.json` in /dir or /dir/scheduler (DDPMScheduler or DDIMScheduler). Conventions, as diffusers'
own pipelines use them:
- the network sees images on [-1, 1] (DiffusionPrior converts from invlab's [0, 1]) and timesteps t = 0..T−1 on
  the training scale, ᾱ_t = alphas_cumprod[t] (the same indexing as DDPMSchedule). Fractional t is passed
  through: the positional embedding casts t to float (a "learned" embedding takes integers only);
- the β table is the scheduler config's `beta_schedule` (linear, scaled_linear, squaredcos_cap_v2, sigmoid) or
  its `trained_betas`, recomputed in float64 (diffusers builds it in float32; ᾱ agrees to ~1e-6 relative);
- `prediction_type` epsilon / v_prediction / sample is converted to ε on the [-1, 1] scale at ᾱ(t):
  v: ε = √ᾱ v + √(1−ᾱ) x_t;  sample: ε = (x_t − √ᾱ x̂0) / √(1−ᾱ);
  `x0` and `denoise` of a v / sample model use its x̂0 directly (x̂0 = √ᾱ x_t − √(1−ᾱ) v), not via ε;
- a learned-variance UNet (out_channels = 2·C) gives ε (or v, x̂0) as its first C channels;
- sampler-only settings of the scheduler (clip_sample, thresholding, timestep_spacing, steps_offset,
  set_alpha_to_one, variance_type) do not change the model and are kept in the card only.
Safety: weights load through zoo/common.py (safetensors preferred; `.bin` with torch.load(weights_only=True)),
strictly: a key or shape mismatch is one sentence, never a random initialisation. diffusers is imported here
only, so `import invlab` stays light.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from invlab.errors import CheckpointError, ConfigError, ShapeError
from invlab.priors.diffusion import DiffusionPrior, from_model, to_model
from invlab.priors.schedule import DDPMSchedule
from invlab.priors.zoo.common import load_strict, read_state_dict

SCHEDULERS = ("DDPMScheduler", "DDIMScheduler")
PREDICTIONS = ("epsilon", "v_prediction", "sample")
WEIGHTS = "diffusion_pytorch_model"
# diffusers' DDPMScheduler/DDIMScheduler defaults for keys a saved config may omit
SCHEDULER_DEFAULTS = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                          trained_betas=None, prediction_type="epsilon", rescale_betas_zero_snr=False)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable JSON config ({e}).") from e


def locate(path: str | None) -> tuple[Path, Path]:
    """(UNet folder, scheduler_config.json) under `path`: the file in path itself or in path/unet, path/scheduler."""
    if path is None or str(path) in ("", "???", "None"):
        raise CheckpointError("the diffusers prior needs a folder: pass prior.path=/dir (what save_pretrained wrote).")
    root = Path(str(path)).expanduser()
    if not root.is_dir():
        raise CheckpointError(f"diffusers folder {str(root)!r} not found (prior.path must be an existing directory).")
    unet = next((d for d in (root, root / "unet") if (d / "config.json").is_file()), None)
    if unet is None:
        raise CheckpointError(f"{root} has no UNet config.json (looked in {root} and {root / 'unet'}).")
    sched = next((f for f in (root / "scheduler_config.json", root / "scheduler" / "scheduler_config.json")
                  if f.is_file()), None)
    if sched is None:
        raise CheckpointError(f"{root} has no scheduler_config.json (looked in {root} and {root / 'scheduler'}); "
                              f"save the DDPMScheduler/DDIMScheduler beside the UNet with save_pretrained.")
    return unet, sched


def schedule_from_config(cfg: dict, where: Path | str = "scheduler_config.json") -> tuple[DDPMSchedule, str]:
    """The float64 DDPMSchedule and the prediction type of a DDPMScheduler/DDIMScheduler config."""
    name = cfg.get("_class_name")
    if name is not None and name not in SCHEDULERS:
        raise ConfigError(f"{where} is a {name}; the diffusers prior reads {' and '.join(SCHEDULERS)} configs.")
    c = {**SCHEDULER_DEFAULTS, **{k: v for k, v in cfg.items() if k in SCHEDULER_DEFAULTS}}
    if c["rescale_betas_zero_snr"]:
        raise ConfigError(f"{where} sets rescale_betas_zero_snr: its last ᾱ is 0 (infinite σ), which the "
                          f"diffusion prior's σ ↔ t map cannot represent.")
    if c["prediction_type"] not in PREDICTIONS:
        raise ConfigError(f"{where} has prediction_type {c['prediction_type']!r}; expected one of "
                          f"{', '.join(PREDICTIONS)}.")
    if c["trained_betas"] is not None:
        sched = DDPMSchedule(kind="table", betas=c["trained_betas"])
        if sched.num_steps != int(c["num_train_timesteps"]):
            raise ConfigError(f"{where}: trained_betas has {sched.num_steps} entries but num_train_timesteps is "
                              f"{c['num_train_timesteps']}.")
    else:
        sched = DDPMSchedule(float(c["beta_start"]), float(c["beta_end"]), int(c["num_train_timesteps"]),
                             str(c["beta_schedule"]))
    return sched, str(c["prediction_type"])


def weight_files(unet_dir: Path, variant: str | None) -> list[Path]:
    """The UNet's weight file(s): safetensors first, then .bin; one file or the shards of an index."""
    infix = f".{variant}" if variant else ""
    for ext in ("safetensors", "bin"):
        single = unet_dir / f"{WEIGHTS}{infix}.{ext}"
        if single.is_file():
            return [single]
        index = unet_dir / f"{WEIGHTS}.{ext}.index{infix}.json"
        if index.is_file():
            shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
            missing = [s for s in shards if not (unet_dir / s).is_file()]
            if not shards or missing:
                raise CheckpointError(f"{index} lists shards that are not there ({', '.join(missing[:3]) or 'none'}).")
            return [unet_dir / s for s in shards]
    raise CheckpointError(f"{unet_dir} has no {WEIGHTS}{infix}.safetensors or .bin weights"
                          f"{' (variant ' + variant + ')' if variant else ''}.")


def load_unet(unet_dir: Path, variant: str | None = None) -> nn.Module:
    """A UNet2DModel built from config.json and loaded strictly from its weights (float32, eval mode)."""
    from diffusers import UNet2DModel

    config = _read_json(unet_dir / "config.json")
    name = config.get("_class_name", "UNet2DModel")
    if name != "UNet2DModel":
        raise ConfigError(f"{unet_dir / 'config.json'} describes a {name}; the diffusers prior loads pixel-space "
                          f"UNet2DModel networks only.")
    if config.get("num_class_embeds") is not None or config.get("class_embed_type") is not None:
        raise ConfigError(f"{unet_dir / 'config.json'} is a class-conditional UNet2DModel; the diffusers prior "
                          f"loads unconditional ones only.")
    if config.get("time_embedding_type", "positional") == "fourier":
        raise ConfigError(f"{unet_dir / 'config.json'} has a Fourier time embedding (a score-SDE VE model, "
                          f"conditioned on σ), not a DDPM/DDIM timestep UNet.")
    files = weight_files(unet_dir, variant)
    state: dict[str, Tensor] = {}
    for f in files:
        state.update(read_state_dict(f))
    with torch.device("meta"):  # no random init: every tensor comes from the file (assign=True)
        net = UNet2DModel.from_config(config)
    fix = getattr(net, "_fix_state_dict_keys_on_load", None)  # diffusers' own renaming of pre-0.14 attention keys
    state = fix(dict(state)) if fix is not None else state
    where = files[0] if len(files) == 1 else unet_dir
    load_strict(net, state, where, f"UNet2DModel({unet_dir / 'config.json'})")
    left = [k for k, v in [*net.named_parameters(), *net.named_buffers()] if v.is_meta]
    if left:
        raise CheckpointError(f"{where} left {len(left)} UNet2DModel tensors unset ({', '.join(left[:3])}).")
    return net


class DiffusersEps(nn.Module):
    """ε(x_t, t) on the [-1, 1] scale from a UNet2DModel with any prediction type (see the module doc)."""

    def __init__(self, unet: nn.Module, schedule: DDPMSchedule, prediction_type: str):
        super().__init__()
        cfg = unet.config
        self.unet, self.schedule, self.prediction_type = unet, schedule, prediction_type
        self.in_channels = int(cfg.in_channels)
        if int(cfg.out_channels) not in (self.in_channels, 2 * self.in_channels):
            raise ConfigError(f"the UNet2DModel has {cfg.in_channels} input but {cfg.out_channels} output channels; "
                              f"expected C (fixed variance) or 2·C (learned variance).")
        self.multiple = 2 ** (len(cfg.down_block_types) - 1)  # every block but the last halves the size
        self.integer_t = cfg.time_embedding_type == "learned"

    def prediction(self, x_t: Tensor, t: Tensor) -> Tensor:
        """The UNet's own output (ε, v or x̂0 by prediction_type), its first C channels."""
        if self.integer_t and not bool(torch.all(t == t.round())):
            raise ConfigError("this UNet2DModel has a learned (lookup-table) time embedding and takes integer "
                              "timesteps only: use prior.t_mode=nearest.")
        tt = t.round().long() if self.integer_t else t
        return self.unet(x_t, tt, return_dict=False)[0][:, : self.in_channels]

    def _alpha_bar(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.schedule.alpha_bar(t).to(x_t.dtype).view(-1, 1, 1, 1)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        out = self.prediction(x_t, t)
        if self.prediction_type == "epsilon":
            return out
        ab = self._alpha_bar(x_t, t)
        if self.prediction_type == "v_prediction":
            return ab.sqrt() * out + (1 - ab).sqrt() * x_t
        return (x_t - ab.sqrt() * out) / (1 - ab).sqrt()  # "sample": the net predicts x̂0

    def x0(self, x_t: Tensor, t: Tensor) -> Tensor:
        """ẑ0 straight from a v or x̂0 prediction (x̂0 = √ᾱ x_t − √(1−ᾱ) v): going through ε and back divides
        float32 rounding by √ᾱ, which is 5e-5 at the last step of the cosine schedule."""
        out = self.prediction(x_t, t)
        if self.prediction_type == "sample":
            return out
        ab = self._alpha_bar(x_t, t)
        return ab.sqrt() * x_t - (1 - ab).sqrt() * out


class DiffusersPrior(DiffusionPrior):
    """`prior=diffusers prior.path=/dir`: a diffusers UNet2DModel + DDPM/DDIM scheduler config as a DiffusionPrior
    (ε, x̂0, Tweedie denoise at any σ in [0, 1] units, sample). `variant`: e.g. "fp16" for
    diffusion_pytorch_model.fp16.safetensors (loaded as float32)."""

    def __init__(self, path: str | None = None, device: str | None = None, t_mode: str = "continuous",
                 variant: str | None = None, **speed):
        unet_dir, sched_file = locate(path)
        sched_cfg = _read_json(sched_file)
        schedule, prediction = schedule_from_config(sched_cfg, sched_file)
        unet = load_unet(unet_dir, variant)
        size = unet.config.sample_size
        size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
        eps = DiffusersEps(unet, schedule, prediction)
        super().__init__(device=device, t_mode=t_mode, net=eps, schedule=schedule, channels=eps.in_channels,
                         image_size=size, **speed)
        self.path = str(path)
        sampler_keys = ("clip_sample", "clip_sample_range", "thresholding", "timestep_spacing", "steps_offset",
                        "set_alpha_to_one", "variance_type")
        self.card: dict[str, Any] = {
            "kind": "diffusion", "family": "diffusers", "path": self.path, "unet": str(unet_dir),
            "scheduler": str(sched_file), "scheduler_class": sched_cfg.get("_class_name"),
            "prediction_type": prediction, "learned_variance": int(unet.config.out_channels) == 2 * eps.in_channels,
            "schedule": schedule.to_dict(), "channels": eps.in_channels, "image_size": list(size),
            "sampler_settings_unused": {k: sched_cfg[k] for k in sampler_keys if k in sched_cfg}}

    def describe(self) -> str:
        return f"DiffusersPrior({self.path})"

    # v / sample models: x̂0 from the prediction directly (same values as through ε, without its cancellation)
    def x0(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        if self.net.prediction_type == "epsilon":
            return super().x0(x_t, t)
        self.check_input(x_t)
        t = torch.as_tensor(t, dtype=torch.float64, device=x_t.device)
        t = t.expand(x_t.shape[0]) if t.dim() == 0 else t.reshape(x_t.shape[0])
        with self.stats.call(x_t):
            return self.net_call(x_t, t, method="x0")

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Tweedie as DiffusionPrior's x − (σ_m²/σ_t)/2 · ε̂, rewritten with ε̂ = (z − ẑ0)/σ_t as
        x̂0 + (1 − r²)(x − x̂0), r = σ_m/σ_t (1 inside the schedule), so a v / sample model's x̂0 is used as is."""
        if self.net.prediction_type == "epsilon":
            return super()._denoise(x, sigma)
        sigma_m = 2.0 * sigma.to(torch.float64)
        t = self.schedule.t_from_sigma(sigma_m, self.t_mode)
        sigma_t = self.schedule.sigma(t)
        ab = (1.0 / (1.0 + sigma_t**2)).to(x.dtype).view(-1, 1, 1, 1)
        x0 = from_model(self.net_call(ab.sqrt() * to_model(x), t, method="x0"))
        one_minus_r2 = (1.0 - (sigma_m / sigma_t) ** 2).to(x.dtype).view(-1, 1, 1, 1)
        return x0 + one_minus_r2 * (x - x0)

    def check_input(self, x: Tensor) -> None:
        super().check_input(x)
        m = self.net.multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ShapeError(f"the diffusers UNet at {self.path} needs height and width divisible by {m} "
                             f"({len(self.net.unet.config.down_block_types)} down blocks), got "
                             f"{tuple(x.shape[-2:])}; resize or crop the data.")
