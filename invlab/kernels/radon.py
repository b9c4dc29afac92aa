"""Triton parallel-beam Radon pair: the forward projection and its exact transpose, both as gathers.

The reference is the torch projector in `invlab/ops/radon.py` (bilinear `grid_sample`, zeros outside the
image, autograd scatter as adjoint); these kernels compute the same sums. Geometry (skimage's): an N×N
image, centre c = N // 2, detector bins t and ray steps s in 0..N−1, and for the angle θ the sample point

    col = c + cos θ (t − c) + sin θ (s − c),    row = c − sin θ (t − c) + cos θ (s − c).

Forward (`_project_kernel`, ray-driven): each (image, angle, detector) output sums over s the bilinear
sample at (row, col): corners (⌊row⌋+{0,1}, ⌊col⌋+{0,1}) with weights (1−f)/f per axis, a corner outside
the image contributing zero (grid_sample's zero padding, align_corners=True).

Adjoint (`_backproject_kernel`, pixel-driven): pixel (i, j) receives Σ y[θ, t]·w from every sample whose
bilinear stencil touches it, i.e. |col − j| < 1 and |row − i| < 1. The point map is a rotation about
(c, c), so inverting it puts those samples in the rotated unit square around

    t₀ = c + cos θ (j − c) − sin θ (i − c),    s₀ = c + sin θ (j − c) + cos θ (i − c),

with |t − t₀| < |cos θ| + |sin θ| = r ≤ √2 and the same for s: an open interval of length 2r < 3, so at
most three detector bins and three steps per angle. The kernel visits those 3×3 candidates (the interval
widened by 0.01 against rounding, in a 4×4 tile whose last row and column never pass), recomputes each
sample point with the very function the forward uses and takes this pixel's bilinear weight from it — zero
for a candidate whose stencil misses the pixel. Every
nonzero term of ⟨Ax, y⟩ therefore appears once in ⟨x, Aᵀy⟩ with the same weight: the exact transpose
(to float rounding), with no atomics. Both kernels work in the input's dtype (float32 or float64).

`project` / `backproject` are differentiable (each one's backward is the other), so autograd through the
operator (DPS's gradients, the RED/ODER data gradients) runs on these kernels too. CPU tensors only run
under TRITON_INTERPRET=1 (the tests), where the interpreter's cost is per program and per operation, so
there the tiles grow to whole images; on CUDA they stay small enough for registers.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

_MARGIN = 0.01   # widening of the analytic candidate interval; 2·√2 + 2·0.01 < 3 keeps it at three integers
DTYPES = (torch.float32, torch.float64)


@triton.jit
def _sample_point(tf, sf, cos, sin, c):
    """(col, row) of ray step sf at detector bin tf: one expression for both kernels. (Bilinear weights are
    continuous in the point, so even a last-bit difference between the two compiled kernels only moves a
    weight by rounding, never drops a term.)"""
    col = c + cos * (tf - c) + sin * (sf - c)
    row = c - sin * (tf - c) + cos * (sf - c)
    return col, row


@triton.jit
def _project_kernel(x_ptr, cos_ptr, sin_ptr, out_ptr, N, K, c,
                    BLOCK_T: tl.constexpr, BLOCK_S: tl.constexpr):
    img = tl.program_id(0).to(tl.int64)      # image × channel
    a = tl.program_id(1)                     # angle
    t = tl.program_id(2) * BLOCK_T + tl.arange(0, BLOCK_T)
    cos = tl.load(cos_ptr + a)
    sin = tl.load(sin_ptr + a)
    t_ok = t < N
    tf = t.to(cos.dtype)[:, None]
    base = x_ptr + img * N * N
    acc = tl.zeros([BLOCK_T], dtype=cos.dtype)
    for s0 in range(0, N, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        ok = t_ok[:, None] & (s < N)[None, :]
        col, row = _sample_point(tf, s.to(cos.dtype)[None, :], cos, sin, c)
        x0f = tl.floor(col)
        y0f = tl.floor(row)
        x0 = x0f.to(tl.int32)
        y0 = y0f.to(tl.int32)
        wx1 = col - x0f
        wy1 = row - y0f
        wx0 = (x0f + 1) - col
        wy0 = (y0f + 1) - row
        in_x0 = (x0 >= 0) & (x0 < N)
        in_x1 = (x0 + 1 >= 0) & (x0 + 1 < N)
        in_y0 = ok & (y0 >= 0) & (y0 < N)
        in_y1 = ok & (y0 + 1 >= 0) & (y0 + 1 < N)
        v00 = tl.load(base + y0 * N + x0, mask=in_y0 & in_x0, other=0.0)
        v01 = tl.load(base + y0 * N + x0 + 1, mask=in_y0 & in_x1, other=0.0)
        v10 = tl.load(base + (y0 + 1) * N + x0, mask=in_y1 & in_x0, other=0.0)
        v11 = tl.load(base + (y0 + 1) * N + x0 + 1, mask=in_y1 & in_x1, other=0.0)
        sample = (v00 * wx0 + v01 * wx1) * wy0 + (v10 * wx0 + v11 * wx1) * wy1
        acc += tl.sum(sample, axis=1)
    tl.store(out_ptr + (img * K + a) * N + t, acc, mask=t_ok)


@triton.jit
def _axis_weight(p, pf):
    """Bilinear weight that pixel index pf (float) gets from a sample at coordinate p along one axis."""
    p0 = tl.floor(p)
    return tl.where(pf == p0, (p0 + 1) - p, tl.where(pf == p0 + 1, p - p0, 0.0))


@triton.jit
def _backproject_kernel(y_ptr, cos_ptr, sin_ptr, out_ptr, N, K, c, margin, BLOCK: tl.constexpr):
    img = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    p_ok = (p < N * N)[:, None]
    cos0 = tl.load(cos_ptr)
    i_f = (p // N).to(cos0.dtype)[:, None]   # row
    j_f = (p % N).to(cos0.dtype)[:, None]    # column
    q = tl.arange(0, 16)[None, :]            # candidate (dt, ds) in a 4×4 tile: the interval allows at most
    dt = (q // 4).to(cos0.dtype)             # three of each, so the fourth row and column always fail the
    ds = (q % 4).to(cos0.dtype)              # `< t0 + r` / `< s0 + r` tests below
    last = (N - 1) * 1.0
    acc = tl.zeros([BLOCK], dtype=cos0.dtype)
    for a in range(K):
        cos = tl.load(cos_ptr + a)
        sin = tl.load(sin_ptr + a)
        r = tl.abs(cos) + tl.abs(sin) + margin
        t0 = c + cos * (j_f - c) - sin * (i_f - c)
        s0 = c + sin * (j_f - c) + cos * (i_f - c)
        tf = tl.floor(t0 - r) + 1 + dt
        sf = tl.floor(s0 - r) + 1 + ds
        ok = p_ok & (tf < t0 + r) & (sf < s0 + r) & (tf >= 0) & (tf <= last) & (sf >= 0) & (sf <= last)
        col, row = _sample_point(tf, sf, cos, sin, c)
        w = tl.where(ok, _axis_weight(col, j_f) * _axis_weight(row, i_f), 0.0)
        y = tl.load(y_ptr + (img * K + a) * N + tf.to(tl.int32), mask=ok, other=0.0)
        acc += tl.sum(w * y, axis=1)
    tl.store(out_ptr + img * N * N + p, acc, mask=p < N * N)


def _check(t: Tensor, cos: Tensor, sin: Tensor) -> None:
    if t.dtype not in DTYPES:
        raise TypeError(f"the Triton Radon kernels take float32 or float64, not {t.dtype}.")
    if cos.dtype != t.dtype or sin.dtype != t.dtype or cos.device != t.device or sin.device != t.device:
        raise TypeError("cos/sin must have the data's dtype and device.")


def project_raw(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """(B, C, N, N) images → (B, C, K, N) projections at the K angles whose cos/sin (K,) are given."""
    _check(x, cos, sin)
    b, ch, n, _ = x.shape
    k = cos.numel()
    x = x.contiguous()
    out = torch.empty((b, ch, k, n), dtype=x.dtype, device=x.device)
    block_t = min(triton.next_power_of_2(n), 32 if x.is_cuda else 256)
    block_s = min(triton.next_power_of_2(n), 64 if x.is_cuda else 256)
    grid = (b * ch, k, triton.cdiv(n, block_t))
    _project_kernel[grid](x, cos.contiguous(), sin.contiguous(), out, n, k, float(n // 2),
                          BLOCK_T=block_t, BLOCK_S=block_s)
    return out


def backproject_raw(y: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """(B, C, K, N) projections → (B, C, N, N): the exact transpose of `project_raw`."""
    _check(y, cos, sin)
    b, ch, k, n = y.shape
    y = y.contiguous()
    out = torch.empty((b, ch, n, n), dtype=y.dtype, device=y.device)
    block = min(triton.next_power_of_2(n * n), 128 if y.is_cuda else 4096)
    grid = (b * ch, triton.cdiv(n * n, block))
    _backproject_kernel[grid](y, cos.contiguous(), sin.contiguous(), out, n, k, float(n // 2), _MARGIN,
                              BLOCK=block)
    return out


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return project_raw(x, cos, sin)

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        return _BackProject.apply(grad, cos, sin), None, None


class _BackProject(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, cos, sin):
        ctx.save_for_backward(cos, sin)
        return backproject_raw(y, cos, sin)

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        return _Project.apply(grad, cos, sin), None, None


def project(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Differentiable forward projection (its backward is `backproject`)."""
    return _Project.apply(x, cos, sin)


def backproject(y: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Differentiable back-projection Aᵀy (its backward is `project`)."""
    return _BackProject.apply(y, cos, sin)
