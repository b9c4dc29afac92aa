"""A DDPM ε-prediction network as a prior: a [0, 1]-units MMSE denoiser at every σ (Tweedie), plus the
native-scale pieces diffusion samplers need (`schedule`, `eps`, `x0`, `to_model`, `from_model`).

Scales. The network works on z = 2x − 1 ∈ [-1, 1]; an image-space noise level σ is 2σ there. Denoising
x = x0 + σ n (x0, σ in [0, 1] units):
    z = 2x − 1 = z0 + (2σ) n                        same noise, doubled level on the model's scale
    t: σ_t = 2σ   (schedule.t_from_sigma, continuous by default; `t_mode="nearest"` for integer steps)
    x_t = √ᾱ_t z = √ᾱ_t z0 + √(1−ᾱ_t) n             exactly the forward process at t
    ẑ0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t = z − 2σ ε̂        (Tweedie: E[z0 | z])
    x̂0 = (ẑ0 + 1) / 2 = x − σ ε̂
Below the schedule (2σ < σ_0 ≈ 0.01, i.e. σ < 0.005 in image units) the network is evaluated at t = 0 and
the score there, −ε̂/σ_0, stands in for the score at σ: x̂0 = x − (σ²/σ_0') ε̂ with σ_0' = σ_0/2, which is
continuous at σ_0 and the identity at σ = 0. The same score substitution serves t_mode="nearest" (integer
t with σ_t ≠ 2σ: x̂0 = x − (2σ²/σ_t) ε̂) and σ above σ_{T−1} (≈ 78 in image units; t clamped to T − 1).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from invlab.errors import CheckpointError, ShapeError
from invlab.priors.base import Prior
from invlab.priors.schedule import DDPMSchedule, ddim_sample


def to_model(x: Tensor) -> Tensor:
    """[0, 1] image → the diffusion model's [-1, 1] scale."""
    return 2.0 * x - 1.0


def from_model(z: Tensor) -> Tensor:
    """[-1, 1] → [0, 1] (no clamping)."""
    return (z + 1.0) / 2.0


def tweedie_denoise(eps_fn, schedule: DDPMSchedule, x: Tensor, sigma: Tensor, t_mode: str = "continuous") -> Tensor:
    """E[x0 | x0 + σ n = x] in [0, 1] units from an ε-prediction network on the [-1, 1] scale (see module doc).

    sigma: (B,) in [0, 1] units. Returns x̂0 in [0, 1] units (not clamped; differentiable in x).
    """
    sigma_m = 2.0 * sigma.to(torch.float64)                                 # noise level on [-1, 1]
    t = schedule.t_from_sigma(sigma_m, t_mode)                               # (B,) float64
    sigma_t = schedule.sigma(t)                                              # = sigma_m inside the range
    ab = (1.0 / (1.0 + sigma_t**2)).to(x.dtype).view(-1, 1, 1, 1)           # ᾱ at that t
    eps = eps_fn(ab.sqrt() * to_model(x), t)
    # x̂0 = x − σ ε̂ in range; σ²/σ_t ε̂ (score extrapolated from σ_t) below σ_0 and for nearest t.
    gain = (sigma_m**2 / sigma_t / 2.0).to(x.dtype).view(-1, 1, 1, 1)       # [0, 1] units: σ · (σ_m / σ_t)
    return x - gain * eps.to(x.dtype)


class DiffusionPrior(Prior):
    """`prior=ddpm_mnist` (shipped checkpoint) or `prior.checkpoint=/path/to/ddpm.safetensors`.

    Samplers use: `schedule` (a DDPMSchedule), `eps(x_t, t)` and `x0(x_t, t)` on the [-1, 1] scale with
    t a (B,) tensor or number (fractional allowed), `to_model`/`from_model`, `t_of_sigma(σ)` for an
    image-space σ, and `sample(n, ...)`. `denoise(x, σ)` is Tweedie in [0, 1] units. Every network call
    (eps, x0, denoise) counts one NFE in `stats`.
    """

    differentiable = True

    def __init__(self, checkpoint: str | None = None, device: str | None = None, t_mode: str = "continuous",
                 *, net: nn.Module | None = None, schedule: DDPMSchedule | None = None,
                 channels: int | None = None, image_size: tuple[int, int] | None = None, **speed):
        super().__init__()
        if (checkpoint is None) == (net is None):
            raise ValueError("DiffusionPrior needs exactly one of `checkpoint` (name or path) and `net`.")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        card: dict = {}
        if checkpoint is not None:
            from invlab.priors.checkpoint import load_checkpoint

            net, arch, card = load_checkpoint(checkpoint, device=device)
            if "schedule" not in card:
                raise CheckpointError(f"{checkpoint} holds a {arch.get('_target_')} without a diffusion schedule in "
                                      f"its card: it is not a diffusion model (a denoiser loads with prior=learned).")
            if card.get("kind") == "conditional_video_diffusion":
                raise CheckpointError(f"{checkpoint} is a conditional video diffusion model; load it with "
                                      f"prior=flair_faces or prior=flair_frame and solver=flair.")
            schedule = DDPMSchedule.from_dict(card.get("schedule"))
            channels = card.get("channels", getattr(net, "in_channels", None))
            image_size = card.get("image_size")
        elif device is not None:
            net = net.to(device)
        for p in net.parameters():
            p.requires_grad_(False)
        self.net, self.card = net.eval(), card
        self.checkpoint = str(checkpoint) if checkpoint is not None else None
        self.schedule = schedule or DDPMSchedule()
        self.channels = int(channels) if channels is not None else getattr(net, "in_channels", None)
        self.image_size = tuple(int(s) for s in image_size) if image_size is not None else None
        self.t_mode = t_mode
        self.schedule.t_from_sigma(0.1, t_mode)  # validates t_mode now, not at the first call
        self.configure_speed(**speed)  # prior.compile / compile_mode / precision / channels_last (speed.py)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()  # a prior is never trained in place
        return self

    def describe(self) -> str:
        return f"DiffusionPrior({self.checkpoint or type(self.net).__name__})"

    # ---- the native ([-1, 1]) scale ----------------------------------------------------------------
    to_model = staticmethod(to_model)
    from_model = staticmethod(from_model)

    def _eps(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64, device=x_t.device)  # the net casts; analytic nets keep it
        t = t.expand(x_t.shape[0]) if t.dim() == 0 else t.reshape(x_t.shape[0])
        return self.net_call(x_t, t)

    def eps(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        """ε̂(x_t, t) on the [-1, 1] scale; t: number or (B,), fractional allowed. One NFE."""
        self.check_input(x_t)
        with self.stats.call(x_t):
            return self._eps(x_t, t)

    def x0(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        """Tweedie x̂0 on the [-1, 1] scale, (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t (not clamped). One NFE."""
        t = torch.as_tensor(t, dtype=torch.float64, device=x_t.device)
        t = t.expand(x_t.shape[0]) if t.dim() == 0 else t.reshape(x_t.shape[0])
        return self.schedule.x0_from_eps(x_t, t, self.eps(x_t, t))

    def t_of_sigma(self, sigma: float | Tensor, mode: str | None = None) -> Tensor:
        """The timestep matching an image-space ([0, 1] units) noise level σ, i.e. σ_t = 2σ."""
        return self.schedule.t_from_sigma(2.0 * torch.as_tensor(sigma, dtype=torch.float64), mode or self.t_mode)

    # ---- the [0, 1] protocol -------------------------------------------------------------------------
    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        return tweedie_denoise(self._eps, self.schedule, x, sigma, self.t_mode)

    @torch.no_grad()
    def sample(self, n: int, steps: int = 50, eta: float = 0.0, skip: str = "uniform",
               generator: torch.Generator | None = None, size: tuple[int, int] | None = None,
               clip: bool = True) -> Tensor:
        """n unconditional samples in [0, 1] (DDIM with `steps`, `eta`; steps=T and eta=1 is DDPM)."""
        size = tuple(size or self.image_size or ())
        if len(size) != 2 or self.channels is None:
            raise ShapeError("DiffusionPrior.sample needs an image size (the card has none): pass size=(H, W).")
        ref = next(iter([*self.net.parameters(), *self.net.buffers()]), torch.empty(0))
        device, dtype = ref.device, (ref.dtype if ref.is_floating_point() else torch.float32)

        def eps_fn(x, t):
            with self.stats.call(x):
                return self._eps(x, t)

        z = ddim_sample(eps_fn, self.schedule, (n, self.channels, *size), steps, eta, skip, generator,
                        device, dtype, clip)
        return from_model(z).clamp(0, 1)

