"""A Task: a forward-operator factory + a noise model + how the operator's random parameters are drawn.

Reproducibility contract: everything random is drawn from CPU generators seeded from (seed, index) —
the operator's parameters per sample when `per_sample=True` (else once from `seed`), and the noise
always per sample — so a sample's measurement does not depend on batch composition, on which DDP rank
measured it, or on the device.

Rule for operator authors: every randomly drawn parameter must be a buffer (not a plain attribute),
because per-sample operators are merged by concatenating their buffers along the batch axis.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from invlab.errors import ConfigError, ShapeError
from invlab.ops.base import Operator
from invlab.ops.noise import make_noise

_OPERATOR_STREAM, _NOISE_STREAM = 0, 1


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (numpy SeedSequence: no collisions between, say,
    (seed=1, index=0) and (seed=0, index=1), unlike seed + index)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def make_generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*keys))


def _set_buffer(module: torch.nn.Module, dotted: str, value: Tensor) -> None:
    *path, leaf = dotted.split(".")
    for part in path:
        module = getattr(module, part)
    module._buffers[leaf] = value


def stack_operators(ops: Sequence[Operator]) -> Operator:
    """Merge single-sample operators into one with batch-B parameters (modifies and returns ops[0]).

    Buffers equal across samples stay shared (batch 1); the others are concatenated along dim 0.
    """
    merged = ops[0]
    if len(ops) == 1:
        return merged
    tables = [dict(op.named_buffers()) for op in ops]
    for name, first in tables[0].items():
        values = [t[name] for t in tables]
        if all(v.shape == first.shape and torch.equal(v, first) for v in values[1:]):
            continue
        if any(v.dim() == 0 or v.shape[0] != 1 or v.shape != first.shape for v in values):
            raise ShapeError(f"cannot stack per-sample parameter {name!r} of {type(merged).__name__}: "
                             f"each sample's copy must have shape (1, ...) and all the same shape.")
        _set_buffer(merged, name, torch.cat(values, dim=0))
    return merged


class Task:
    """Operator factory + noise; `measure(x, indices, seed)` returns (A, y = noise(A(x)))."""

    name: str = ""

    def __init__(self, operator: Callable[..., Operator], noise: str = "gaussian", sigma_y: float = 0.0,
                 per_sample: bool = False, **noise_kwargs):
        if isinstance(operator, Operator) or not callable(operator):
            raise ConfigError("task.operator must be an operator factory: give its config `_partial_: true`.")
        self.operator_factory = operator
        self.noise = make_noise(noise, sigma=sigma_y, **noise_kwargs)
        self.sigma_y = float(sigma_y)
        self.per_sample = bool(per_sample)
        self._shared: tuple[tuple, Operator] | None = None   # cache of the last shared operator

    def __repr__(self) -> str:
        return f"Task(name={self.name!r}, noise={self.noise!r}, per_sample={self.per_sample})"

    def _build(self, in_shape: tuple[int, ...], *keys: int) -> Operator:
        op = self.operator_factory(in_shape=in_shape, generator=make_generator(*keys))
        required = getattr(op, "measurement_noise", None)
        if required is not None and required != self.noise.name:
            raise ConfigError(f"operator {type(op).__name__} needs noise={required}, got noise={self.noise.name}.")
        return op

    def make_operator(self, in_shape: Sequence[int], indices: Sequence[int], seed: int = 0) -> Operator:
        """The operator for these samples: parameters drawn per (seed, index), or once per seed (cached)."""
        in_shape = tuple(int(s) for s in in_shape)
        if self.per_sample:
            return stack_operators([self._build(in_shape, seed, _OPERATOR_STREAM, int(i)) for i in indices])
        key = (int(seed), in_shape)
        if self._shared is None or self._shared[0] != key:
            self._shared = (key, self._build(in_shape, seed, _OPERATOR_STREAM))
        return self._shared[1]

    @torch.no_grad()
    def measure(self, x: Tensor, indices: Sequence[int], seed: int = 0) -> tuple[Operator, Tensor]:
        """Build the operator for these samples, bind the noise model, and return (A, y)."""
        indices = [int(i) for i in indices]
        if x.dim() < 2 or len(indices) != x.shape[0]:
            raise ShapeError(f"measure got {len(indices)} indices for an image batch of shape {tuple(x.shape)}.")
        A = self.make_operator(tuple(x.shape[1:]), indices, seed).to(x.device)
        A.noise = self.noise
        clean = A(x)
        y = torch.cat([self.noise(clean[j:j + 1], generator=make_generator(seed, _NOISE_STREAM, i))
                       for j, i in enumerate(indices)])
        return A, y


def image_domain(A: Operator, y: Tensor, fill: float = 0.5) -> Tensor:
    """ỹ, a measurement as an image: a pixel mask (inpainting) gets `fill` in its dropped pixels,
    y + fill·(1 − M); any other linear operator maps back by its adjoint (MRI: the zero-filled image)."""
    from invlab.ops.mask import Mask

    if isinstance(A, Mask):
        return A.fill(y, fill)
    if not getattr(A, "is_linear", True):
        raise ConfigError(f"a measurement maps to an image only through a linear operator; "
                          f"{type(A).__name__} is not linear.")
    return A.adjoint(y)


@torch.no_grad()
def measured_images(task: Task, x: Tensor, seed: int = 0, fill: float = 0.5, batch_size: int = 64,
                    with_masks: bool = False):
    """ỹ for every image of x (N, C, H, W), measured by the seeded task (operator + noise per index);
    with_masks also returns each pixel mask (N, 1 or C, H, W) of an inpainting task."""
    out, masks = [], []
    for start in range(0, x.shape[0], int(batch_size)):
        xb = x[start:start + int(batch_size)]
        A, y = task.measure(xb, list(range(start, start + xb.shape[0])), seed=seed)
        out.append(image_domain(A, y, fill).to(x.dtype))
        if with_masks:
            m = getattr(A, "mask", None)
            if m is None or m.dim() != 4:
                raise ShapeError(f"{type(A).__name__} has no pixel mask; masked training needs an inpainting task.")
            masks.append(m.expand(xb.shape[0], *m.shape[1:]).to(x.dtype))
    return (torch.cat(out), torch.cat(masks)) if with_masks else torch.cat(out)
