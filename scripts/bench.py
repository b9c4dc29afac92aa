#!/usr/bin/env python
"""Benchmark the solvers: wall time vs the network time measured inside the same solve.

    python scripts/bench.py --json bench.json [--prior dncnn_gray] [--size 256] [--device cpu]
    python scripts/bench.py --suite diffusion --json bench_diffusion.json [--batch 8] [--device cpu]

For each solver it runs one warm-up solve, then `--repeats` timed solves of a Gaussian deblur of the
camera image, and reports wall seconds, NFE, network seconds (every prior call timed as it happens,
inside the solve) and overhead_ratio = wall / network seconds. Because both clocks run in the same
solve, machine noise largely cancels in the ratio. Also reports peak memory.

`--suite diffusion`: the diffusion solvers with the shipped `ddpm_mnist` prior on the first `--batch` MNIST
test digits (task deblur), at the reproduction table's CPU budgets (DIFFUSION_SOLVERS). The network time is
the forward ε(x_t, t) calls; solvers that backpropagate through the network (DPS, DMPlug) spend their
backward passes outside it, so their ratio shows that cost.

`--suite priors`: the priors' speed switches (eager | compiled | bf16 | compiled_bf16), network seconds per
call and speedup over eager, timed alternately in one run (scripts/bench_priors.py, which takes the options).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PNP_SOLVERS = ("pnp_admm", "pnp_hqs", "pnp_pgd", "red")
DIFFUSION_SOLVERS = {"dps": {"steps": 200}, "diffpir": {"steps": 100}, "dolph": {"steps": 200},
                     "dpnp": {"k_start": 2, "k": 6, "k_settle": 0, "dds_steps": 25, "pcs_iters": 200},  # 8 outer its
                     "pnp_dm": {"iters": 40, "dds_steps": 10}, "dmplug": {"iters": 50}}


def load(group: str, name: str, **overrides):
    from omegaconf import OmegaConf

    from invlab.utils.config import build

    cfg = OmegaConf.load(ROOT / "conf" / group / f"{name}.yaml")
    for key, val in overrides.items():
        OmegaConf.update(cfg, key, val)
    return build(cfg)


def bench_solver(name: str, y, A, prior, repeats: int, **overrides) -> dict:
    import torch

    solver = load("solver", name, **overrides)
    solver(y, A, prior)  # warm-up: first-call allocations and kernel selection
    rows = []
    for _ in range(repeats):
        if y.is_cuda:
            torch.cuda.reset_peak_memory_stats()
        res = solver(y, A, prior)
        rows.append((res.seconds, res.net_seconds, res.nfe))
    # wall and network seconds of one and the same solve (the one with the lowest ratio)
    best = min(rows, key=lambda r: r[0] / r[1])
    return {"solver": name, "nfe": best[2], "wall_seconds": best[0], "net_seconds": best[1],
            "overhead_ratio": best[0] / best[1], "ratios": [r[0] / r[1] for r in rows],
            "seconds_per_nfe": best[0] / max(best[2], 1)}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--suite=priors" in argv or any(a == "--suite" and b == "priors" for a, b in zip(argv, argv[1:])):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_priors import main as bench_priors

        return bench_priors(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--prior", default="dncnn_gray", help="checkpoint name or path of a learned denoiser")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--solvers", default=None, help="comma-separated; default: every solver of the suite")
    p.add_argument("--suite", choices=("pnp", "diffusion", "priors"), default="pnp")
    args = p.parse_args(argv)

    import torch

    from invlab.data.datasets import gray_test, mnist
    from invlab.errors import InvlabError
    from invlab.priors.learned import LearnedDenoiser

    torch.manual_seed(0)
    diffusion = args.suite == "diffusion"
    try:
        if diffusion:
            prior = load("prior", "ddpm_mnist").to(args.device).eval()
        else:
            prior = LearnedDenoiser(args.prior).to(args.device).eval()
    except InvlabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if diffusion:
        x = mnist("test", limit=args.batch).images.to(args.device)
    else:
        x = gray_test(size=args.size).images[:1].repeat(args.batch, 1, 1, 1).to(args.device)
    task = load("task", "deblur")
    A, y = task.measure(x, list(range(x.shape[0])), seed=0)
    budgets = DIFFUSION_SOLVERS if diffusion else {name: {} for name in PNP_SOLVERS}
    results = []
    for name in (args.solvers.split(",") if args.solvers else list(budgets)):
        r = bench_solver(name, y, A, prior, args.repeats, **budgets.get(name, {}))
        results.append(r)
        print(f"{name:10s} nfe={r['nfe']:4d} wall={r['wall_seconds']:8.3f}s net={r['net_seconds']:8.3f}s "
              f"overhead_ratio={r['overhead_ratio']:.4f}", flush=True)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    meta = {"suite": args.suite, "prior": "ddpm_mnist" if diffusion else args.prior,
            "size": x.shape[-1], "batch": args.batch, "device": args.device,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
            "peak_rss_mb": round(peak_rss_mb, 1)}
    if args.device.startswith("cuda"):
        meta["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(f"peak RSS {peak_rss_mb:.0f} MB; threads {meta['threads']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
