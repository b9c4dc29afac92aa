"""Compressed sensing closed forms in float64 against a dense numpy solve (issue 16 item 3).

The operator's prox and pseudo-inverse use an eigendecomposition of ΦΦᵀ; in a float64 call they must be
float64-accurate. The reference builds the dense block-diagonal matrix of the whole operator from Φ's
entries and solves with numpy in float64 (no code of the operator beyond reading Φ)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from invlab.ops.cs import CompressedSensing

F64 = torch.float64


def dense(op: CompressedSensing, shape) -> np.ndarray:
    """The operator as a dense (n_meas, n_pixels) float64 matrix: Φ on every b×b block, raster order of
    blocks, measurements laid out (C, n_blocks, m) as the operator's."""
    c, h, w = shape
    bh, bw = op.block
    phi = op.matrix[0].double().numpy()
    m = phi.shape[0]
    rows = []
    for ch in range(c):
        for bi in range(h // bh):
            for bj in range(w // bw):
                block = np.zeros((m, c, h, w))
                block[:, ch, bi * bh:(bi + 1) * bh, bj * bw:(bj + 1) * bw] = phi.reshape(m, bh, bw)
                rows.append(block.reshape(m, -1))
    return np.concatenate(rows, 0)


@pytest.mark.parametrize("block_size", [None, 8])
def test_cs_prox_and_pinv_are_float64_accurate(block_size):
    shape = (1, 16, 16)
    op = CompressedSensing.gaussian(shape, torch.Generator().manual_seed(0), ratio=0.3,
                                    block_size=block_size).to(F64)
    M = dense(op, shape)
    g = torch.Generator().manual_seed(1)
    z = torch.rand((2, *shape), generator=g, dtype=F64)
    y = op(torch.rand((2, *shape), generator=g, dtype=F64)) + 0.01 * torch.randn((2, *op.out_shape), generator=g,
                                                                                  dtype=F64)
    assert torch.allclose(op(z).reshape(2, -1), torch.from_numpy(z.reshape(2, -1).numpy() @ M.T), atol=1e-12)
    yv = y.reshape(2, -1).numpy()
    for rho in (1e-3, 0.1, 10.0):
        expect = np.linalg.solve(M.T @ M + rho * np.eye(M.shape[1]), (M.T @ yv.T + rho * z.reshape(2, -1).numpy().T))
        got = op.prox_l2(z, y, rho).reshape(2, -1).numpy().T
        assert np.abs(got - expect).max() < 1e-10 * np.abs(expect).max(), rho
    got = op.pinv(y, eps=0.0).reshape(2, -1).numpy().T
    expect = np.linalg.pinv(M) @ yv.T
    assert np.abs(got - expect).max() < 1e-10 * np.abs(expect).max()
    eps = 1e-4
    got = op.pinv(y, eps=eps).reshape(2, -1).numpy().T
    expect = M.T @ np.linalg.solve(M @ M.T + eps * np.eye(M.shape[0]), yv.T)
    assert np.abs(got - expect).max() < 1e-10 * np.abs(expect).max()


def test_cs_float32_calls_keep_float32_factors():
    op = CompressedSensing.gaussian((1, 16, 16), torch.Generator().manual_seed(0), ratio=0.3, block_size=8)
    z = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    out = op.prox_l2(z, op(z), 0.5)
    assert out.dtype == torch.float32 and torch.allclose(out, z, atol=1e-4)   # y = Az: z is the prox
    lam, vecs = op.gram_factors(torch.float32)
    assert lam.dtype == vecs.dtype == torch.float32
    assert op.gram_factors(F64)[0].dtype == F64
