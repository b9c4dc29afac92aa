"""The Triton CT projector (invlab/kernels/radon.py) against the torch reference (invlab/ops/radon.py).

On CPU the kernels run in Triton's interpreter: TRITON_INTERPRET=1 is set only while the kernel module is
imported (triton decides interpret-or-compile when a kernel is decorated), then restored, so no other test
sees it. The interpreter is slow (tens of ms per program here), hence the small sizes; it proves correctness only.
Tests marked `gpu` compare the compiled kernels with the reference on CUDA.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from invlab.errors import ConfigError
from invlab.ops.radon import Radon
from invlab.priors.gaussian import GaussianPrior
from invlab.solvers.red import RED


def _interpreted_kernels():
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        from triton.runtime.interpreter import InterpretedFunction
        module = importlib.import_module("invlab.kernels.radon")
        if not isinstance(module._project_kernel, InterpretedFunction):   # imported earlier, compiled
            module = importlib.reload(module)
        # the first launch imports more of triton (its gluon kernels, decorated on import): do it now
        one = torch.ones(1, dtype=torch.float32)
        module.backproject_raw(module.project_raw(torch.ones(1, 1, 2, 2), one, 0 * one), one, 0 * one)
        return module
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved


K = _interpreted_kernels()
F32, F64 = torch.float32, torch.float64
ROOT = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def pair(in_shape, angles, dtype):
    """The same operator twice: torch reference and Triton kernels."""
    ref = Radon(in_shape, angles).to(dtype)
    tri = Radon(in_shape, angles).to(dtype)
    tri.kernel = "triton"
    ref.kernel = "torch"
    return ref, tri


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


ANGLES = {
    "uniform12": torch.arange(12, dtype=F64) * 15.0,
    # off-grid, negative, beyond 180° and exactly axis-aligned angles (|cos|+|sin| from 1 to √2)
    "irregular": torch.tensor([-33.3, 0.0, 45.0, 90.0, 97.1, 135.0, 180.0, 211.7, 300.0], dtype=F64),
}


@pytest.mark.parametrize("n", [16, 11])
@pytest.mark.parametrize("angles", list(ANGLES))
def test_forward_equals_the_torch_reference(n, angles):
    ref, tri = pair((2, n, n), ANGLES[angles], F32)
    x = torch.rand(2, 2, n, n, generator=torch.Generator().manual_seed(n))
    assert rel(tri(x), ref(x)) <= 1e-5


@pytest.mark.parametrize("dtype,tol", [(F32, 1e-5), (F64, 1e-12)])
def test_adjoint_is_exact_and_equals_the_reference_adjoint(dtype, tol):
    ref, tri = pair((1, 13, 13), ANGLES["irregular"], dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 13, 13, generator=g, dtype=dtype)
    y = torch.randn(2, 1, 9, 13, generator=g, dtype=dtype)
    ax, aty = tri(x), tri.adjoint(y)
    lhs, rhs = (ax.double() * y.double()).flatten(1).sum(1), (x.double() * aty.double()).flatten(1).sum(1)
    assert float(((lhs - rhs).abs() / lhs.abs()).max()) <= tol        # ⟨Ax, y⟩ = ⟨x, Aᵀy⟩
    assert rel(aty, ref.adjoint(y)) <= tol
    assert rel(ax, ref(x)) <= tol


def test_autograd_through_the_kernels_is_the_back_projection():
    """DPS-style gradients through A(x), and the backward of the adjoint (the forward again)."""
    ref, tri = pair((1, 12, 12), ANGLES["uniform12"], F32)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(1, 1, 12, 12, generator=g)
    y = torch.randn(1, 1, 12, 12, generator=g)
    grads = []
    for A in (ref, tri):
        x = x0.clone().requires_grad_(True)
        ((A(x) - y) ** 2).sum().backward()
        grads.append(x.grad)
    assert rel(grads[1], grads[0]) <= 1e-5
    yy = y.clone().requires_grad_(True)
    (tri.adjoint(yy) * x0).sum().backward()           # d⟨Aᵀy, x⟩/dy = Ax
    assert rel(yy.grad, ref(x0)) <= 1e-5


def test_oder_subset_projections_and_gradients_agree():
    ref, tri = pair((1, 10, 10), torch.arange(12, dtype=F64) * 15.0, F64)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 10, 10, generator=g, dtype=F64)
    y = torch.randn(2, 1, 12, 10, generator=g, dtype=F64)
    subset, weights = ref.draw_angles(1 / 3, torch.Generator().manual_seed(3))
    assert subset.numel() == 4
    assert rel(tri._project(x, subset), ref._project(x, subset)) <= 1e-12
    assert rel(tri.subset_grad(x, y, subset, weights), ref.subset_grad(x, y, subset, weights)) <= 1e-12
    assert rel(tri.stochastic_grad(x, y, 4, torch.Generator().manual_seed(4)),
               ref.stochastic_grad(x, y, 4, torch.Generator().manual_seed(4))) <= 1e-12


def test_oder_solve_is_the_same_on_either_projector():
    """solver=oder's loop (RED + stratified minibatch gradients) on a small CT problem, exact Gaussian prior."""
    n, g = 6, torch.Generator().manual_seed(5)
    root = torch.randn(n * n, n * n, generator=g, dtype=F64)
    cov = 0.05 * root @ root.T / n**2 + 0.01 * torch.eye(n * n, dtype=F64)
    prior = GaussianPrior(torch.full((1, n, n), 0.5, dtype=F64), cov)
    ref, tri = pair((1, n, n), torch.arange(12, dtype=F64) * 15.0, F64)
    x = prior.sample(1, g, dtype=F64)
    y = ref(x) + 0.05 * torch.randn(1, 1, 12, n, generator=g, dtype=F64)
    solver = RED(iters=6, method="nesterov", tau=20.0, sigma_den=0.2, minibatch=1 / 3, power_iters=5)
    out = [solver(y, A, prior, generator=torch.Generator().manual_seed(6)).x for A in (ref, tri)]
    assert rel(out[1], out[0]) <= 1e-10


def test_auto_picks_the_reference_on_cpu_and_bad_choices_are_one_sentence():
    A = Radon.example()
    x = torch.rand(1, 1, 16, 16)
    assert A.kernel == "auto" and not A._use_triton(x)
    A.kernel = "triton"
    with pytest.raises(ConfigError, match="float32 or float64"):
        A(x.half())
    A.kernel = "fast"
    with pytest.raises(ConfigError, match="'auto', 'torch' or 'triton'"):
        A(x)


AOT = """
import json, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from invlab.kernels import radon as K
out = {}
for dt in ("fp32",):   # float64 compiles too (checked by hand; ~8 s more here)
    ptrs = {name: "*" + dt for name in ("cos_ptr", "sin_ptr", "out_ptr")}
    for fn, sig, const in ((K._project_kernel, dict(x_ptr="*" + dt, **ptrs, N="i32", K="i32", c="fp32"),
                            dict(BLOCK_T=32, BLOCK_S=64)),
                           (K._backproject_kernel, dict(y_ptr="*" + dt, **ptrs, N="i32", K="i32", c="fp32",
                                                        margin="fp32"), dict(BLOCK=128))):
        sig.update(dict.fromkeys(const, "constexpr"))
        ptx = triton.compile(ASTSource(fn, sig, constexprs=const), target=GPUTarget("cuda", 90, 32)).asm["ptx"]
        out[fn.__name__ + "_" + dt] = dict(atomics=ptx.count("atom."), f64=ptx.count(".f64"), bytes=len(ptx))
print(json.dumps(out))
"""


def test_kernels_compile_for_hopper_without_a_gpu(tmp_path):
    """The interpreter is laxer than the compiler: compile both kernels for sm_90 (H100/H200) ahead of time,
    in a process without TRITON_INTERPRET and with a fresh cache. Gathers only: no atomics; and no float64
    arithmetic slipped into the float32 kernels."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", AOT], check=True, capture_output=True, text=True, timeout=300,
                         env=env, cwd=ROOT)
    kernels = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(kernels) == 2 and all(k["bytes"] > 1000 and k["atomics"] == 0 for k in kernels.values())
    assert kernels["_project_kernel_fp32"]["f64"] == kernels["_backproject_kernel_fp32"]["f64"] == 0


def test_bench_script_reports_both_projectors(tmp_path):
    """scripts/bench_radon.py in its own process (it sets TRITON_INTERPRET for itself on CPU)."""
    out = tmp_path / "radon.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_radon.py"), "--device", "cpu", "--sizes", "8x4",
                    "--repeats", "1", "--json", str(out)], check=True, capture_output=True, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    rows = json.loads(out.read_text())["results"]
    assert [(r["kernel"], r["op"]) for r in rows] == [("torch", "forward"), ("torch", "adjoint"),
                                                      ("triton", "forward"), ("triton", "adjoint")]
    assert all(r["max_rel_dev"] <= 1e-5 and r["median_s"] > 0 for r in rows[2:])


@pytest.fixture
def compiled_kernels():
    """The kernel module compiled for the GPU for one test, interpreted again afterwards."""
    from triton.runtime.interpreter import InterpretedFunction
    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        importlib.reload(K)
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved
    assert not isinstance(K._project_kernel, InterpretedFunction)
    yield K
    _interpreted_kernels()


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("n,n_angles", [(128, 90), (256, 180), (97, 31)])
def test_cuda_kernels_equal_the_reference(n, n_angles, compiled_kernels):
    dev = torch.device("cuda")
    A = Radon.parallel_beam((3, n, n), n_angles=n_angles).to(dev)
    assert A._use_triton(torch.zeros(1, device=dev))                 # "auto" picks Triton on CUDA
    ref = Radon.parallel_beam((3, n, n), n_angles=n_angles).to(dev)
    ref.kernel = "torch"
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.rand(4, 3, n, n, generator=g, device=dev)
    y = torch.randn(4, 3, n_angles, n, generator=g, device=dev)
    ax, aty = A(x), A.adjoint(y)
    assert rel(ax, ref(x)) <= 1e-5
    assert rel(aty, ref.adjoint(y)) <= 1e-5
    lhs, rhs = (ax.double() * y.double()).sum(), (x.double() * aty.double()).sum()
    assert float((lhs - rhs).abs() / lhs.abs()) <= 1e-5
    subset, w = A.draw_angles(1 / 3, torch.Generator().manual_seed(1))
    assert rel(A.subset_grad(x, y, subset, w), ref.subset_grad(x, y, subset, w)) <= 1e-5


@pytest.mark.gpu
@cuda
def test_cuda_bench_in_a_fresh_process(tmp_path):
    """The compiled kernels in a process that never saw the interpreter: agreement and timings."""
    out = tmp_path / "radon_gpu.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_radon.py"), "--device", "cuda", "--sizes",
                    "256x180,97x31", "--batch", "4", "--json", str(out)], check=True, timeout=300, env=env)
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 8 and all(r["max_rel_dev"] <= 1e-5 for r in rows if r["kernel"] == "triton")
