"""FLAIR's video operators (issue 15): the data-consistency projection x + Aᵀ(AAᵀ + εI)⁻¹(y − Ax) of each against
the same formula with the dense matrix of A, the projection's defining properties, and the baselines. The
adjoint / prox / pinv properties are covered with every other operator by tests/test_ops.py's registry tests."""
from __future__ import annotations

import pytest
import torch

from invlab.errors import ShapeError
from invlab.ops.video import VideoBlur, VideoFrameMask, VideoSuperResolution

SHAPE = (1, 4, 8, 8)   # (C, T, H, W)


def operators():
    return {"sr": VideoSuperResolution(SHAPE, scale=2), "blur": VideoBlur.gaussian(SHAPE, kernel_size=5, kernel_std=1.0),
            "mask": VideoFrameMask(SHAPE, step=2)}


def dense(A) -> torch.Tensor:
    """The (m, n) matrix of A, column j = A(e_j), in float64."""
    n = int(torch.tensor(SHAPE).prod())
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *SHAPE)
    return A(eye).reshape(n, -1).T


@pytest.mark.parametrize("name,eps", [("sr", 0.0), ("mask", 0.0), ("sr", 0.05), ("mask", 0.3), ("blur", 1e-3),
                                      ("blur", 0.1)])
def test_projection_matches_the_dense_closed_form(name, eps):
    A = operators()[name].double()
    M = dense(A)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, *SHAPE, generator=g, dtype=torch.float64)
    y = A(torch.rand(2, *SHAPE, generator=g, dtype=torch.float64)) + 0.05 * torch.randn(A(x).shape, generator=g,
                                                                                         dtype=torch.float64)
    r = (y - A(x)).reshape(2, -1).T
    ref = x.reshape(2, -1).T + M.T @ torch.linalg.solve(M @ M.T + eps * torch.eye(M.shape[0], dtype=M.dtype), r)
    ours = A.project(x, y, eps)
    assert torch.allclose(ours.reshape(2, -1).T, ref, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("name", ["sr", "mask"])
def test_exact_projection_is_consistent_idempotent_and_closest(name):
    A = operators()[name].double()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, *SHAPE, generator=g, dtype=torch.float64), A(torch.rand(3, *SHAPE, generator=g, dtype=torch.float64))
    p = A.project(x, y)
    assert torch.allclose(A(p), y, atol=1e-12)                  # on the measurement set
    assert torch.allclose(A.project(p, y), p, atol=1e-12)       # a projection
    other = A.project(p + torch.rand(3, *SHAPE, generator=g, dtype=torch.float64), y)   # another consistent point
    assert bool(((x - p).flatten(1).norm(dim=1) <= (x - other).flatten(1).norm(dim=1) + 1e-12).all())


def test_video_baselines_are_clip_shaped_and_sensible():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, *SHAPE, generator=g)
    A = operators()["mask"]
    b = A.baseline(A(x))
    assert b.shape == x.shape and torch.equal(b[:, :, 0], x[:, :, 0])
    assert torch.allclose(b[:, :, 1], (x[:, :, 0] + x[:, :, 2]) / 2) and torch.equal(b[:, :, 3], x[:, :, 2])
    assert torch.equal(A.observed(), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    flat = torch.full((1, *SHAPE), 0.4)
    for name, A in operators().items():  # a constant clip comes back (the Wiener blur baseline: 1/1.01 of it)
        assert torch.allclose(A.baseline(A(flat)), flat / (1.01 if name == "blur" else 1.0), atol=1e-5)


def test_video_operator_shape_errors_name_the_problem():
    with pytest.raises(ShapeError, match="multiples of 4"):
        VideoSuperResolution((1, 8, 30, 32), scale=4)
    with pytest.raises(ShapeError, match="videos"):
        VideoBlur.gaussian((1, 32, 32))
    A = VideoSuperResolution((1, 8, 32, 32), scale=4)
    with pytest.raises(ShapeError, match=r"\(B, 1, 8, 32, 32\)"):
        A(torch.rand(2, 1, 6, 32, 32))   # wrong frame count
    with pytest.raises(ShapeError, match=r"\(B, 1, 8, 32, 32\)"):
        A(torch.rand(2, 3, 8, 32, 32))   # wrong channels
