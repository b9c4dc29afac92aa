"""Property tests over every registered operator, and closed forms against their generic fallbacks."""
from __future__ import annotations

import pytest
import torch

import invlab.ops  # noqa: F401  (registers every operator)
from invlab.errors import ShapeError
from invlab.ops.base import OPERATORS, LinearOperator, batch_dot
from invlab.ops.common import ImageLinearOperator

LINEAR = sorted(n for n, c in OPERATORS.items() if c.is_linear)
NONLINEAR = sorted(n for n, c in OPERATORS.items() if not c.is_linear)
SHAPE = (1, 16, 16)
CHANNELS = [1, 3]   # gray and colour: every operator acts on each channel alike
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def example_shape(name: str | None, channels: int = 1) -> tuple[int, ...]:
    """(C, 16, 16) images, or (C, T, 16, 16) clips for the video operators (invlab/ops/video.py)."""
    frames = getattr(OPERATORS[name], "example_frames", None) if name else None
    return (channels, *([frames] if frames else []), *SHAPE[1:])


def make(name: str, dtype=torch.float64, seed: int = 0, channels: int = 1):
    return OPERATORS[name].example(example_shape(name, channels),
                                   generator=torch.Generator().manual_seed(seed)).to(dtype)


def rand_like_measurement(y: torch.Tensor, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if y.is_complex():
        return torch.view_as_complex(torch.randn(*y.shape, 2, generator=g, dtype=y.real.dtype))
    return torch.randn(y.shape, generator=g, dtype=y.dtype)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def images(batch=2, dtype=torch.float64, seed=2, channels=1, name=None):
    return torch.rand(batch, *example_shape(name, channels), generator=torch.Generator().manual_seed(seed),
                      dtype=dtype)


def test_registry_covers_every_operator_family():
    expected = {"identity", "blur", "super_resolution", "mask", "cs", "mri", "mri_multicoil", "radon",
                "phase_retrieval", "coded_phase_retrieval", "quantized", "nonlinear_blur",
                "video_super_resolution", "video_blur", "video_frame_mask"}
    assert expected <= set(OPERATORS)


# ---- linear operators --------------------------------------------------------------------------
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("name", LINEAR)
def test_linear_operator_properties(name, channels):
    A = make(name, channels=channels)
    x = images(channels=channels, name=name)
    ax = A(x)
    assert tuple(ax.shape) == (2, *A.out_shape)
    y = rand_like_measurement(ax)
    # adjointness in float64: every adjoint here is exact, so only rounding remains
    lhs, rhs = batch_dot(ax, y), batch_dot(x, A.adjoint(y))
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10 * float(lhs.abs().max())), (lhs, rhs)

    # prox optimality: Aᵀ(Ap − y) + ρ(p − z) = 0 (CG fallbacks stop at a 1e-6 relative residual)
    z, rho = images(seed=3, channels=channels, name=name), torch.tensor([0.3, 2.0], dtype=torch.float64)
    p = A.prox_l2(z, y, rho)
    residual = A.adjoint(A(p) - y) + rho.view(-1, *[1] * (x.dim() - 1)) * (p - z)
    assert float(residual.norm() / (A.adjoint(y) + rho.view(-1, *[1] * (x.dim() - 1)) * z).norm()) < 1e-5
    p_scalar = A.prox_l2(z, y, 0.3)
    assert rel(p_scalar[0], p[0]) < 1e-5

    # pseudo-inverse on the range: A A⁺ (Ax) ≈ Ax (Tikhonov eps = 1e-4 costs ≲ sqrt(eps)/2 relative)
    assert rel(A(A.pinv(ax)), ax) < 1e-2
    assert A.baseline(ax).shape == x.shape and not A.baseline(ax).is_complex()


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("name", LINEAR)
def test_linear_dtypes_and_shapes_float32(name, channels):
    A = make(name, torch.float32, channels=channels)
    x = images(dtype=torch.float32, channels=channels, name=name)
    y = A(x)
    assert y.dtype in (torch.float32, torch.complex64)
    for out in (A.adjoint(y), A.pinv(y), A.prox_l2(x, y, 0.5), A.baseline(y), A.grad(x, y)):
        assert out.dtype == torch.float32 and out.shape == x.shape


# ---- nonlinear operators -----------------------------------------------------------------------
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("name", NONLINEAR)
def test_nonlinear_operator_properties(name, channels):
    A = make(name, channels=channels)
    x = images(channels=channels, name=name)
    y = A(images(seed=5, channels=channels, name=name)).detach()
    if name == "quantized":   # measurements are bits
        y = torch.where(torch.rand_like(y) < torch.sigmoid(y), 1.0, -1.0).to(y.dtype)
    assert tuple(A(x).shape) == (2, *A.out_shape)

    # gradient vs central finite differences along a random direction
    v = images(seed=6, channels=channels, name=name) - 0.5
    eps = 1e-6
    fd = (A.data_fidelity(x + eps * v, y) - A.data_fidelity(x - eps * v, y)) / (2 * eps)
    assert torch.allclose(batch_dot(A.grad(x, y), v), fd, rtol=1e-5, atol=1e-7)

    # the prox decreases ½‖A(x) − y‖²-type objective relative to its starting point z
    z, rho = images(seed=7, channels=channels, name=name), 1.0
    objective = lambda u: A.data_fidelity(u, y) + 0.5 * rho * ((u - z) ** 2).flatten(1).sum(1)  # noqa: E731
    p = A.prox_l2(z, y, rho)
    assert p.shape == z.shape
    assert bool((objective(p) < objective(z)).all())
    assert A.baseline(y).shape == x.shape and not A.baseline(y).is_complex()


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("name", NONLINEAR)
def test_nonlinear_dtypes_float32(name, channels):
    A = make(name, torch.float32, channels=channels)
    x = images(dtype=torch.float32, channels=channels, name=name)
    y = A(x)
    assert y.dtype == torch.float32
    for out in (A.grad(x, y), A.prox_l2(x, y, 1.0, iters=3), A.baseline(y)):
        assert out.dtype == torch.float32 and out.shape == x.shape


# ---- shape errors and devices ------------------------------------------------------------------
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_wrong_shapes_raise_one_sentence_shape_error(name, channels):
    A = make(name, torch.float32, channels=channels)
    good, bad = images(dtype=torch.float32, channels=channels, name=name), torch.rand(2, channels, 12, 16)
    y = A(good)
    other_channels = torch.rand(2, 4 - channels, 16, 16)   # 3 channels for a gray operator, 1 for colour
    calls = [lambda: A(bad), lambda: A(other_channels), lambda: A(torch.rand(16, 16)), lambda: A.prox_l2(bad, y, 1.0),
             lambda: A.prox_l2(good, y[..., :-1], 1.0), lambda: A.grad(good, y[..., :-1])]
    if A.is_linear:
        calls += [lambda: A.adjoint(y[..., :-1]), lambda: A.pinv(y[:, None])]
    for call in calls:
        with pytest.raises(ShapeError) as err:
            call()
        assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_device(name, device):
    A = make(name, torch.float32).to(device)
    x = images(dtype=torch.float32, name=name).to(device)
    y = A(x)
    outs = [y, A.grad(x, y), A.prox_l2(x, y, 1.0, iters=3), A.baseline(y)]
    outs += [A.adjoint(y), A.pinv(y)] if A.is_linear else []
    assert all(o.device.type == device for o in outs)


# ---- colour: channel by channel ----------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_colour_operator_is_the_gray_operator_on_each_channel(name):
    """Reference: the C = 1 operator drawn from the same seed, applied to each channel separately and the
    results stacked. The colour operator must equal it for A, Aᵀ, A⁺, the baseline and the prox (one random
    kernel/mask/matrix/code shared by the channels; per-channel application is the convention)."""
    A1, A3 = make(name, channels=1), make(name, channels=3)
    x, z = images(channels=3, name=name), images(seed=3, channels=3, name=name)
    per_channel = lambda f: torch.cat([f(x[:, c:c + 1], c) for c in range(3)], 1)  # noqa: E731
    y = A3(x)
    assert tuple(y.shape) == (2, *A3.out_shape) and A3.out_shape[0] == 3
    assert rel(y, per_channel(lambda xc, c: A1(xc))) < 1e-12
    y = y.detach()
    if name == "quantized":
        y = torch.where(torch.rand(y.shape, generator=torch.Generator().manual_seed(4)) < 0.5, 1.0, -1.0).double()
    pick = lambda c: y[:, c:c + 1]  # noqa: E731
    checks = {"baseline": (A3.baseline(y), per_channel(lambda xc, c: A1.baseline(pick(c))))}
    if A3.is_linear:
        checks["adjoint"] = (A3.adjoint(y), per_channel(lambda xc, c: A1.adjoint(pick(c))))
        checks["pinv"] = (A3.pinv(y), per_channel(lambda xc, c: A1.pinv(pick(c))))
        checks["prox_l2"] = (A3.prox_l2(z, y, 0.7), torch.cat([A1.prox_l2(z[:, c:c + 1], pick(c), 0.7)
                                                                for c in range(3)], 1))
        # CG fallbacks stop on the residual of the whole batch, so they agree only to their tolerance
        # (the pinv one solves the ill-conditioned (AᵀA + 1e-4 I) x = Aᵀy and stops unconverged at its cap of
        # 100 + 4·16 iterations: one 3-channel CG and three 1-channel ones then differ by 1.8e-2 on radon)
        fallback = lambda m: getattr(type(A3), m) is getattr(ImageLinearOperator, m)  # noqa: E731
        tol = {"pinv": 3e-2 if fallback("pinv") else 1e-10, "prox_l2": 1e-4 if fallback("prox_l2") else 1e-10}
    else:  # a few gradient steps: each channel's data term is separate, so the steps are too
        checks["prox_l2"] = (A3.prox_l2(z, y, 1.0, iters=3), torch.cat(
            [A1.prox_l2(z[:, c:c + 1], pick(c), 1.0, iters=3) for c in range(3)], 1))
        tol = {"prox_l2": 1e-4}
    for key, (ours, ref) in checks.items():
        assert rel(ours, ref) < tol.get(key, 1e-10), (key, rel(ours, ref))


# ---- closed forms vs the generic fallbacks -----------------------------------------------------
def _overrides():
    pairs = []
    for name in LINEAR:
        cls = OPERATORS[name]
        for method in ("adjoint", "prox_l2", "pinv"):
            if getattr(cls, method) is not getattr(ImageLinearOperator, method):
                pairs.append((name, method))
    return pairs


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("name,method", _overrides())
def test_closed_form_matches_fallback(name, method, channels):
    A = make(name, channels=channels)
    x = images(channels=channels, name=name)
    y = A(x) + 0.1 * rand_like_measurement(A(x))
    if method == "adjoint":
        assert rel(A.adjoint(y), LinearOperator.adjoint(A, y)) < 1e-10
    elif method == "prox_l2":
        z, rho = images(seed=3, channels=channels, name=name), torch.tensor([0.05, 1.0], dtype=torch.float64)
        ref = LinearOperator.prox_l2(A, z, y, rho, iters=1000)
        assert rel(A.prox_l2(z, y, rho), ref) < 1e-5
    else:  # both solve (AᵀA + eps I) x = Aᵀy; masks use the exact inverse, 1e-4 away
        ref = LinearOperator.pinv(A, y, iters=1000, eps=1e-4)
        assert rel(A.pinv(y, eps=1e-4), ref) < 1e-3


def test_closed_forms_are_overridden_where_promised():
    promised = {("blur", m) for m in ("adjoint", "prox_l2", "pinv")} | {
        ("super_resolution", "prox_l2"), ("mask", "prox_l2"), ("identity", "prox_l2"),
        ("mri", "prox_l2"), ("mri", "pinv"), ("cs", "prox_l2"), ("cs", "pinv")}
    assert promised <= set(_overrides())


# ---- references: scipy convolution, skimage Radon ------------------------------------------------
@pytest.mark.parametrize("ksize,shape", [(5, (2, 16, 20)), (4, (1, 16, 16)), (21, (1, 12, 14))])
def test_fft_blur_matches_scipy_wrap_convolution(ksize, shape):
    """Odd and even kernels (centre at k // 2), several channels, and a kernel larger than the image."""
    from scipy.ndimage import convolve

    from invlab.ops.blur import Blur

    g = torch.Generator().manual_seed(0)
    kernel = torch.rand(ksize, ksize, generator=g, dtype=torch.float64)  # asymmetric: catches flips
    x = torch.rand(1, *shape, generator=g, dtype=torch.float64)
    ours = Blur(shape, kernel).double()(x)[0].numpy()
    ref = [convolve(x[0, c].numpy(), kernel.numpy(), mode="wrap") for c in range(shape[0])]
    for c in range(shape[0]):
        assert abs(ours[c] - ref[c]).max() < 1e-6 * abs(ref[c]).max()   # kernel buffer is float32


@pytest.mark.parametrize("n", [64, 128])
def test_radon_matches_skimage_on_shepp_logan(n):
    """Same rotation centre (N // 2), angles (degrees), unit ray spacing and bilinear interpolation with
    zeros outside as skimage's warp-and-sum, so only rounding differs: relative error < 1e-6 (float64;
    measured ~1e-15). FBP is only checked to be a sensible reconstruction."""
    import numpy as np
    from skimage.data import shepp_logan_phantom
    from skimage.transform import radon, rescale

    from invlab.ops.radon import Radon

    img = rescale(shepp_logan_phantom(), n / 400, anti_aliasing=True)
    rows, cols = np.ogrid[:n, :n]
    img[(rows - n // 2) ** 2 + (cols - n // 2) ** 2 > (n // 2) ** 2] = 0   # circle=True's assumption
    A = Radon.parallel_beam((1, n, n), n_angles=45).double()
    ref = radon(img, theta=A.angles[0].numpy(), circle=True).T       # skimage: (detector, angle)
    sino = A(torch.from_numpy(img)[None, None])
    assert rel(sino[0, 0], torch.from_numpy(ref)) < 1e-6
    assert rel(A.fbp(sino)[0, 0], torch.from_numpy(img)) < 0.3


# ---- kernels, masks, coil maps, per-sample parameters ------------------------------------------
def test_kernels_are_normalised_and_seeded():
    from invlab.ops.kernels import gaussian_kernel, motion_kernel, uniform_kernel

    for k in (gaussian_kernel(25, 2.0), uniform_kernel(9), motion_kernel(25, 0.5, torch.Generator().manual_seed(0))):
        assert abs(float(k.sum()) - 1) < 1e-5 and float(k.min()) >= 0
    a = motion_kernel(25, 0.8, torch.Generator().manual_seed(1))
    b = motion_kernel(25, 0.8, torch.Generator().manual_seed(1))
    c = motion_kernel(25, 0.8, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert int((motion_kernel(25, 0.0, torch.Generator().manual_seed(3)) > 0).sum()) > 10  # a line, not a dot


def test_cartesian_mask_and_coil_maps():
    from invlab.ops.mask import cartesian_column_mask
    from invlab.ops.mri import simulated_coil_maps

    mask = cartesian_column_mask(256, acceleration=4, center_fraction=0.08, generator=torch.Generator().manual_seed(0))
    assert bool(mask[128 - 10:128 + 10].all())                  # ACS lines around the DC column
    assert 256 / 4 * 0.75 < float(mask.sum()) < 256 / 4 * 1.25   # ~W/R columns in total
    maps = simulated_coil_maps(8, 32, 24, torch.Generator().manual_seed(0))
    assert maps.shape == (8, 32, 24) and maps.is_complex()
    assert torch.allclose(maps.abs().pow(2).sum(0), torch.ones(32, 24), atol=1e-5)


def test_per_sample_parameters_check_the_batch():
    from invlab.ops.task import stack_operators

    ops = [OPERATORS["blur"].example(SHAPE, torch.Generator().manual_seed(s)) for s in (0, 1, 2)]
    A = stack_operators(ops)
    assert A.kernel.shape[0] == 3
    x = torch.rand(3, *SHAPE)
    y = A(x)
    single = [OPERATORS["blur"].example(SHAPE, torch.Generator().manual_seed(s))(x[s:s + 1]) for s in (0, 1, 2)]
    assert torch.allclose(y, torch.cat(single), atol=1e-6)
    with pytest.raises(ShapeError):
        A(torch.rand(2, *SHAPE))


def test_quantized_prox_is_exact():
    A = make("quantized")
    z = images()
    y = torch.where(torch.rand_like(z) < 0.5, 1.0, -1.0).double()
    p = A.prox_l2(z, y, 0.7)
    assert float((A.grad(p, y) + 0.7 * (p - z)).abs().max()) < 1e-8


def test_blur_prox_cache_follows_the_measurement():
    """The FFT prox caches k̄·ŷ for speed; a new or in-place-modified measurement must not reuse it."""
    from invlab.ops.blur import Blur

    g = torch.Generator().manual_seed(0)
    A = Blur.gaussian((1, 16, 16), kernel_size=5, kernel_std=1.0)
    x, z = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    y = A(x)
    fresh = Blur.gaussian((1, 16, 16), kernel_size=5, kernel_std=1.0)
    assert torch.allclose(A.prox_l2(z, y, 0.3), fresh.prox_l2(z, y.clone(), 0.3), atol=1e-6)
    y.mul_(2.0)
    assert torch.allclose(A.prox_l2(z, y, 0.3), fresh.prox_l2(z, y.clone(), 0.3), atol=1e-6)
    y2 = y + 1.0
    assert torch.allclose(A.prox_l2(z, y2, 0.3), fresh.prox_l2(z, y2.clone(), 0.3), atol=1e-6)


def test_phase_retrieval_align_matches_brute_force_and_undoes_the_ambiguities():
    """align(x̂, x) = argmin over every circular shift of pad(x̂) and its 180° rotation of ‖crop − x‖², checked
    against an explicit loop; a shifted, rotated copy of x (same |F pad|, so a perfect reconstruction) is
    mapped back to x exactly."""
    A = OPERATORS["phase_retrieval"].example((1, 12, 12))
    g = torch.Generator().manual_seed(3)
    x = torch.zeros(3, 1, 12, 12, dtype=torch.float64)
    x[..., 3:9, 2:10] = torch.rand(3, 1, 6, 8, generator=g, dtype=torch.float64)
    xhat = torch.rand(3, 1, 12, 12, generator=g, dtype=torch.float64)
    aligned = A.align(xhat, x)
    for b in range(3):
        p = A._pad(xhat[b:b + 1])
        errs = [float(((A._crop(torch.roll(c, (i, j), (-2, -1))) - x[b]) ** 2).sum())
                for c in (p, p.flip(-2, -1)) for i in range(p.shape[-2]) for j in range(p.shape[-1])]
        assert float(((aligned[b] - x[b]) ** 2).sum()) == pytest.approx(min(errs), rel=1e-9, abs=1e-12)
    twin = A._crop(torch.roll(A._pad(x).flip(-2, -1), (1, -2), (-2, -1)))   # support stays inside the image
    assert torch.allclose(A(twin), A(x), atol=1e-10) and not torch.allclose(twin, x)
    assert torch.allclose(A.align(twin, x), x, atol=1e-12)
    assert OPERATORS["coded_phase_retrieval"].align is None
