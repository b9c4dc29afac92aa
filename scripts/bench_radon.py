"""Time the CT projector: the torch reference (grid_sample + autograd scatter) against the Triton pair.

    python scripts/bench_radon.py --device cuda --sizes 256x180,512x360 --batch 8 --json bench_radon_gpu.json
    OMP_NUM_THREADS=1 python scripts/bench_radon.py --device cpu --sizes 16x12,32x30 --batch 1

On CUDA the Triton kernels are compiled (the first call, compile included, is reported as `first_s`). On CPU
they can only run in Triton's interpreter (TRITON_INTERPRET=1, set here before triton is imported): that
measures the price of the correctness tests, not a speed anyone would use. Each row: forward A x and adjoint
Aᵀy of a batch of (1, N, N) images at n_angles angles, median seconds of `--repeats` calls after the first,
`time_vs_torch` = Triton median / torch median, and `max_rel_dev`, the largest deviation of the Triton
result from the reference relative to the reference's largest entry.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--sizes", default="16x12,32x30", help="comma-separated NxANGLES")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    from invlab.ops.radon import Radon

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA GPU.", file=sys.stderr)
        return 2
    dev = torch.device(args.device)

    def timed(fn, arg):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn(arg)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - t

    rows = []
    for spec in args.sizes.split(","):
        n, n_angles = (int(v) for v in spec.lower().split("x"))
        g = torch.Generator(device=dev).manual_seed(0)
        x = torch.rand(args.batch, 1, n, n, generator=g, device=dev)
        y = torch.randn(args.batch, 1, n_angles, n, generator=g, device=dev)
        results, seconds = {}, {}
        for kernel in ("torch", "triton"):
            A = Radon.parallel_beam((1, n, n), n_angles=n_angles).to(dev)
            A.kernel = kernel
            for op, fn, arg in (("forward", A, x), ("adjoint", A.adjoint, y)):
                out, first = timed(fn, arg)
                times = [timed(fn, arg)[1] for _ in range(args.repeats)]
                results[kernel, op], seconds[kernel, op] = out, statistics.median(times)
                row = dict(n=n, n_angles=n_angles, batch=args.batch, device=args.device, kernel=kernel, op=op,
                           first_s=round(first, 6), median_s=round(statistics.median(times), 6))
                if kernel == "triton":
                    ref = results["torch", op]
                    row["max_rel_dev"] = float((out - ref).abs().max() / ref.abs().max())
                    row["time_vs_torch"] = round(seconds["triton", op] / seconds["torch", op], 3)
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        meta = dict(torch=torch.__version__, device=torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
                    threads=torch.get_num_threads(), interpreter=dev.type == "cpu")
        Path(args.json).write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
