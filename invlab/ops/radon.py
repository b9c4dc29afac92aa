"""Parallel-beam Radon transform in torch (differentiable), matching `skimage.transform.radon(circle=True)`.

Conventions (those of scikit-image, so results can be compared directly): a square N×N image, rotation
centre at pixel (N // 2, N // 2), angles θ in degrees (default: n_angles equally spaced in [0°, 180°)),
unit pixel spacing. The projection at angle θ and detector bin t (0..N−1) sums, over ray samples
s = 0..N−1 at unit spacing, the bilinearly interpolated image at

    column = c + cos θ (t − c) + sin θ (s − c),    row = c − sin θ (t − c) + cos θ (s − c),

with zeros outside the image, exactly what skimage does by warping the image and summing its rows.
The sinogram is laid out (B, C, n_angles, N) (skimage returns its transpose, (N, n_angles)).

The adjoint (back-projection) is the exact transpose: it is the autograd vector–Jacobian product of
the bilinear sampling (`grid_sample`'s backward scatters with the same weights), so ⟨Ax, y⟩ = ⟨x, Aᵀy⟩
to rounding. Prox and pseudo-inverse use the CG fallbacks; `baseline` is filtered back-projection.

On CUDA (float32/float64, triton installed) projection and back-projection run on the matched Triton pair
in `invlab/kernels/radon.py` (ray-driven gather forward, pixel-driven gather transpose: no atomic scatter);
this torch code is their reference and the CPU path. `A.kernel = "torch" | "triton"` forces one
(`"triton"` on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported: the tests).

Minibatch data gradients (ODER, methods.md I): `stochastic_grad(x, y, size, generator)` estimates
∇½‖Ax − y‖² = Σ_θ A_θᵀ(A_θ x − y_θ) from a stratified random subset S of the angles. The n angles (in the
order given, so sorted for `parallel_beam`) are cut into k contiguous strata of ⌊n/k⌋ or ⌈n/k⌉ angles, and
one angle is drawn uniformly from each, independently. An angle of a stratum of s angles is drawn with
probability 1/s, so weighting its term by s (Horvitz–Thompson) makes the estimate unbiased:

    ĝ = Σ_{θ∈S} s(θ) A_θᵀ(A_θ x − y_θ),    E[ĝ] = ∇½‖Ax − y‖².

When k divides n every weight is n/k, ĝ = (n/k)·A_Sᵀ(A_S x − y_S), and the n/k subsets {the r-th angle of
every stratum} partition the angles, so their gradients average to the full one exactly. Every subset
is spread over [0°, 180°) (one angle per 180°/k), which keeps the estimate's variance low. (ODER's code
draws its 30 of 90 angles as the same 6 random offsets in each of 5 blocks of 18 angles: the same idea
with coarser strata.) A stochastic gradient costs k/n of a full one: k projections, k back-projections.
"""
from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from invlab.errors import ConfigError, ShapeError
from invlab.ops.base import register
from invlab.ops.common import ImageLinearOperator

_POINTS_PER_CHUNK = 1 << 22   # bounds the sampling-grid memory (~32 MB in float32) per chunk of angles


def ramp_filter(size: int, dtype=torch.float64) -> Tensor:
    """Fourier response of the ramp filter for a zero-padded projection of length `size`.

    Built from the band-limited spatial ramp (Kak & Slaney eq. 61) rather than |ω| sampled directly,
    which avoids the DC offset of the naive filter (the construction skimage's iradon uses too).
    """
    n = torch.cat([torch.arange(1, size // 2 + 1, 2), torch.arange(size // 2 - 1, 0, -2)]).to(dtype)
    h = torch.zeros(size, dtype=dtype)
    h[0] = 0.25
    h[1::2] = -1.0 / (math.pi * n) ** 2
    return 2 * torch.fft.fft(h).real


def minibatch_count(size: float | int, n: int) -> int:
    """How many of n angles a minibatch `size` means: a fraction (float in (0, 1]) of n, rounded, or a
    count (int in [1, n])."""
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise ConfigError(f"minibatch={size!r} must be a fraction in (0, 1] or a count of angles.")
    if isinstance(size, float):
        if not 0.0 < size <= 1.0:
            raise ConfigError(f"minibatch={size} as a fraction of the angles must lie in (0, 1].")
        return max(1, round(size * n))
    if not 1 <= size <= n:
        raise ConfigError(f"minibatch={size} angles, but the operator has {n}: give 1 to {n} or a fraction.")
    return size


@register("radon")
class Radon(ImageLinearOperator):
    """Parallel-beam projections of (B, C, N, N) images at `angles` (degrees, a buffer of shape (1, n))."""

    kernel = "auto"   # "auto": Triton on CUDA, torch elsewhere; "torch" or "triton" forces one

    def __init__(self, in_shape: tuple[int, ...], angles: Tensor):
        super().__init__(in_shape)
        c, h, w = self.in_shape
        if h != w:
            raise ShapeError(f"the Radon operator needs square images, got {h}×{w}.")
        angles = torch.as_tensor(angles, dtype=torch.float64).reshape(1, -1)
        self.register_buffer("angles", angles)
        self.out_shape = (c, angles.shape[1], h)
        # sampling grids are the costly part of a projection (~0.2 s at 256², 90 angles): cache them per
        # (dtype, device); angles are fixed at construction, so the cache never goes stale
        self._grids: dict[tuple, Tensor] = {}

    @classmethod
    def parallel_beam(cls, in_shape, generator=None, n_angles: int = 90,
                      max_angle: float = 180.0) -> "Radon":
        """n_angles equally spaced angles in [0, max_angle) degrees (skimage's default layout)."""
        return cls(in_shape, torch.arange(n_angles, dtype=torch.float64) * (max_angle / n_angles))

    @classmethod
    def example(cls, in_shape=(1, 16, 16), generator=None) -> "Radon":
        return cls.parallel_beam(in_shape, n_angles=12)

    def _grid(self, angles_deg: Tensor, dtype, device) -> Tensor:
        """Normalised grid_sample coordinates, shape (1, n·N, N, 2): rows = (angle, ray sample s),
        columns = detector bin t."""
        n = self.in_shape[-1]
        c = n // 2
        theta = torch.deg2rad(angles_deg.to(torch.float64))
        cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
        t = torch.arange(n, dtype=torch.float64)[None, None, :] - c   # detector bin
        s = torch.arange(n, dtype=torch.float64)[None, :, None] - c   # position along the ray
        col = c + cos * t + sin * s
        row = c - sin * t + cos * s
        # align_corners=True: pixel index i ↦ −1 + 2i/(N−1), so pixel centres are sampled exactly
        grid = torch.stack([col, row], dim=-1) * (2.0 / (n - 1)) - 1.0
        return grid.reshape(1, -1, n, 2).to(dtype=dtype, device=device)

    def _grids_for(self, dtype, device) -> Tensor:
        """Every angle's sampling grid, (n_angles, N, N, 2), built once per (dtype, device)."""
        key = (dtype, str(device))
        if key not in self._grids:
            angles, n = self.angles[0], self.in_shape[-1]
            chunk = max(1, _POINTS_PER_CHUNK // (n * n))
            parts = [self._grid(angles[i:i + chunk], dtype, device) for i in range(0, angles.numel(), chunk)]
            self._grids[key] = torch.cat(parts, dim=1).reshape(angles.numel(), n, n, 2)
        return self._grids[key]

    def _use_triton(self, t: Tensor) -> bool:
        if self.kernel == "torch":
            return False
        if self.kernel == "triton":
            if t.dtype not in (torch.float32, torch.float64):
                raise ConfigError(f"the Triton Radon kernels take float32 or float64 data, not {t.dtype}.")
            if importlib.util.find_spec("triton") is None:
                raise ConfigError("Radon.kernel='triton' needs the triton package (pip install -r requirements.txt).")
            return True
        if self.kernel != "auto":
            raise ConfigError(f"Radon.kernel={self.kernel!r}: use 'auto', 'torch' or 'triton'.")
        return (t.is_cuda and t.dtype in (torch.float32, torch.float64)
                and importlib.util.find_spec("triton") is not None)

    def _trig(self, t: Tensor, subset: Tensor | None) -> tuple[Tensor, Tensor]:
        """cos θ and sin θ of every angle (or of `subset`), computed in float64, in t's dtype and device."""
        theta = torch.deg2rad(self.angles[0].to(torch.float64))
        if subset is not None:
            theta = theta.index_select(0, subset.to(theta.device))
        return theta.cos().to(dtype=t.dtype, device=t.device), theta.sin().to(dtype=t.dtype, device=t.device)

    def adjoint(self, y: Tensor) -> Tensor:
        if self._use_triton(y):
            self.check_measurement(y)
            from invlab.kernels.radon import backproject
            return backproject(y, *self._trig(y, None))
        return super().adjoint(y)

    def _project(self, x: Tensor, subset: Tensor | None = None) -> Tensor:
        """Projections of x at every angle, or at the angle indices `subset`: (B, C, n_angles or k, N)."""
        if self._use_triton(x):
            from invlab.kernels.radon import project
            return project(x, *self._trig(x, subset))
        b, c, n, _ = x.shape
        grids = self._grids_for(x.dtype, x.device)
        if subset is not None:
            grids = grids.index_select(0, subset.to(grids.device))
        flat = x.reshape(1, b * c, n, n)            # one shared grid for every image and channel
        chunk = max(1, _POINTS_PER_CHUNK // (n * n))
        parts = []
        for i in range(0, grids.shape[0], chunk):
            grid = grids[i:i + chunk].reshape(1, -1, n, 2)
            samples = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            parts.append(samples.reshape(b, c, -1, n, n).sum(dim=3))   # sum along each ray
        return torch.cat(parts, dim=2)

    def forward(self, x: Tensor) -> Tensor:
        return self._project(x)

    def _weighted_grad(self, x: Tensor, y: Tensor, subset: Tensor | None, weights: Tensor | None) -> Tensor:
        """Σ_θ w_θ A_θᵀ(A_θ x − y_θ) over `subset` (all angles if None) as one projection and its
        vector–Jacobian product (the exact back-projection): one forward and one backward pass."""
        self.check_input(x)
        self.check_measurement(y)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            proj = self._project(xg, subset)
            measured = y if subset is None else y.index_select(2, subset.to(y.device))
            residual = proj.detach() - measured
            if weights is not None:
                residual = residual * weights.to(dtype=residual.dtype, device=residual.device)[:, None]
            # the vjp as the gradient of the scalar <A_S x, r> (an explicit grad_outputs imports sympy once)
            (g,) = torch.autograd.grad((proj * residual).sum(), xg)
        return g

    def grad(self, x: Tensor, y: Tensor) -> Tensor:
        """∇½‖Ax − y‖² = Aᵀ(Ax − y)."""
        return self._weighted_grad(x, y, None, None)

    def subset_grad(self, x: Tensor, y: Tensor, subset: Tensor, weights: Tensor | float = 1.0) -> Tensor:
        """Σ_{θ∈subset} w_θ A_θᵀ(A_θ x − y_θ) for angle indices `subset` (k,), weights (k,) or a scalar."""
        subset = torch.as_tensor(subset, dtype=torch.long)
        w = torch.as_tensor(weights, dtype=torch.float64).expand(subset.shape[0])
        return self._weighted_grad(x, y, subset, w)

    def draw_angles(self, size: float | int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """A stratified random subset of the angle indices (k,) and its unbiasing weights (k,), the sizes
        of the strata (see the module docstring). `size`: a fraction (float) or a count (int) of angles.
        Drawn on the generator's device, so a seeded generator gives the same subsets on every run."""
        n = self.angles.shape[1]
        k = minibatch_count(size, n)
        bounds = torch.tensor([i * n // k for i in range(k + 1)])   # strata of ⌊n/k⌋ or ⌈n/k⌉ angles
        starts, sizes = bounds[:-1], bounds[1:] - bounds[:-1]
        device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(k, generator=generator, device=device, dtype=torch.float64).cpu()
        offsets = torch.minimum((u * sizes).floor().long(), sizes - 1)
        return starts + offsets, sizes.to(torch.float64)

    def stochastic_grad(self, x: Tensor, y: Tensor, size: float | int,
                        generator: torch.Generator | None = None) -> Tensor:
        """An unbiased estimate of ∇½‖Ax − y‖² from a stratified random subset of `size` angles."""
        return self.subset_grad(x, y, *self.draw_angles(size, generator))

    def fbp(self, y: Tensor) -> Tensor:
        """Filtered back-projection: ramp-filter each projection, back-project, scale by π/(2·n_angles)."""
        self.check_measurement(y)
        n = self.in_shape[-1]
        size = max(64, 1 << math.ceil(math.log2(2 * n)))   # zero-pad against circular wrap-around
        response = ramp_filter(size).to(dtype=y.dtype, device=y.device)
        spectrum = torch.fft.fft(F.pad(y, (0, size - n)), dim=-1) * response
        filtered = torch.fft.ifft(spectrum, dim=-1).real[..., :n]
        return self.adjoint(filtered) * (math.pi / (2 * self.angles.shape[1]))

    def baseline(self, y: Tensor) -> Tensor:
        return self.fbp(y)
