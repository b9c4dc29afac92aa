#!/usr/bin/env python
"""Benchmark the priors' speed switches (invlab/priors/speed.py): network seconds per call, eager vs each mode.

    python scripts/bench.py --suite priors --json bench_priors.json            # every shipped prior, CPU
    python scripts/bench_priors.py --priors dncnn_gray,ddpm_mnist --rounds 5   # the same, a subset
    python scripts/bench_priors.py --device cuda --priors dncnn_gray,drunet_gray,ddpm_mnist,adm_ffhq_random \
        --batch 1,8 --modes eager,bf16,fp16,compiled,compiled_bf16 --json bench_gpu.json

Each prior runs at its working size (the images it is used on: 256² for the natural-image denoisers, 28² MNIST,
25² LFW faces and blur kernels) and batch (1 at 256², 8 for the small ones; `--batch` overrides). One call is
`prior.denoise(x, 25/255)` for a denoiser and `prior.eps(x_t, t=500)` for a diffusion prior, under no_grad.
Every mode is built once, warmed up (its first call is where a compiled mode compiles: `first_call_seconds`),
then timed over `--rounds` rounds; within a round the modes are called one after another (alternately), so a
load change on a shared machine hits all modes alike; `seconds_per_call` is the median over the rounds and
`speedup` = eager seconds / this mode's seconds. `meta` records the load average before and after.

Modes: eager (fp32), compiled, bf16, compiled_bf16, fp16, channels_last, bf16_channels_last.
`adm_ffhq_random` is the ffhq_10m-shaped ADM (93.6 M parameters) with random weights, at 256².
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {"eager": {}, "compiled": {"compile": True}, "bf16": {"precision": "bf16"},
         "compiled_bf16": {"compile": True, "precision": "bf16"}, "fp16": {"precision": "fp16"},
         "channels_last": {"channels_last": True}, "bf16_channels_last": {"precision": "bf16", "channels_last": True}}
DEFAULT_MODES = ("eager", "compiled", "bf16", "compiled_bf16")
# name: (channels, size, batch) — where each shipped prior is used
WORKING = {"dncnn_gray": (1, 256, 1), "drunet_gray": (1, 256, 1), "dncnn_gray_sn": (1, 256, 1),
           "dncnn_color": (3, 256, 1), "dncnn_grad": (2, 256, 1), "adapt_gray_mnist": (1, 28, 8),
           "dncnn_mnist": (1, 28, 8), "dncnn_mnist04": (1, 28, 8), "dncnn_lfw": (1, 25, 8),
           "dncnn_kernel": (1, 25, 8), "ddpm_mnist": (1, 28, 8), "msm_mnist": (1, 28, 8),
           "adm_ffhq_random": (3, 256, 1)}
RANDOM = ("adm_ffhq_random",)


def shipped() -> list[str]:
    return [n for n in WORKING if (ROOT / "invlab" / "checkpoints" / f"{n}.safetensors").is_file()]


def build_prior(name: str, device: str, **speed):
    import torch

    from invlab.priors.diffusion import DiffusionPrior
    from invlab.priors.learned import LearnedDenoiser

    if name == "adm_ffhq_random":
        from invlab.priors.zoo.adm import ADMEps, build_adm

        torch.manual_seed(0)
        return DiffusionPrior(net=ADMEps(build_adm("ffhq")), channels=3, image_size=(256, 256), device=device,
                              **speed).eval()
    from invlab.priors.checkpoint import read_metadata, resolve_checkpoint

    diffusion = read_metadata(resolve_checkpoint(name)).get("card", {}).get("kind") == "diffusion"
    cls = DiffusionPrior if diffusion else LearnedDenoiser
    return cls(name, device=device, **speed).eval()


def call(prior, x):
    import torch

    if hasattr(prior, "schedule"):
        return prior.eps(x, torch.full((x.shape[0],), 500.0, dtype=torch.float64, device=x.device))
    return prior.denoise(x, 25 / 255)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_prior(name: str, modes: list[str], batch: int | None, rounds: int, device: str) -> list[dict]:
    import torch

    c, size, b = WORKING[name]
    b = batch or b
    x = torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    priors, rows = {}, {}
    with torch.no_grad():
        for mode in modes:
            priors[mode] = build_prior(name, device, **MODES[mode])
            sync(device)
            t0 = time.perf_counter()
            call(priors[mode], x)
            sync(device)
            rows[mode] = {"prior": name, "mode": mode, "size": size, "batch": b, "device": device,
                          "first_call_seconds": round(time.perf_counter() - t0, 3), "times": []}
            if device.startswith("cuda"):  # the call's own peak above what is allocated before it (weights etc.)
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            call(priors[mode], x)  # a second warm-up call (CUDA graphs record on the second call)
            if device.startswith("cuda"):
                sync(device)
                rows[mode]["call_peak_cuda_mb"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
                rows[mode]["weights_mb"] = round(sum(p.numel() * p.element_size()
                                                     for p in priors[mode].parameters()) / 2**20, 1)
        for _ in range(rounds):
            for mode in modes:
                sync(device)
                t0 = time.perf_counter()
                call(priors[mode], x)
                sync(device)
                rows[mode]["times"].append(time.perf_counter() - t0)
    eager = statistics.median(rows["eager"]["times"]) if "eager" in rows else None
    out = []
    for mode in modes:
        r = rows[mode]
        s = statistics.median(r.pop("times"))
        r["seconds_per_call"] = round(s, 5)
        r["images_per_second"] = round(b / s, 2)
        r["speedup"] = round(eager / s, 3) if eager else None
        out.append(r)
        print(f"{name:18s} {mode:18s} {size:4d}² ×{b:<3d} {s * 1e3:9.2f} ms/call  ×{r['speedup'] or 0:.2f}  "
              f"(first call {r['first_call_seconds']:.1f} s)", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--priors", default=None, help="comma-separated; default: every shipped prior")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"comma-separated of {', '.join(MODES)}")
    p.add_argument("--batch", default=None, help="comma-separated batch sizes; default: each prior's working one")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--suite", default="priors", help=argparse.SUPPRESS)  # when called through bench.py
    args = p.parse_args(argv)

    import torch

    names = args.priors.split(",") if args.priors else shipped()
    modes = args.modes.split(",")
    bad = [n for n in names if n not in WORKING or (n not in RANDOM and n not in shipped())]
    bad += [m for m in modes if m not in MODES]
    if bad or args.rounds < 1:
        print(f"error: unknown or unshipped prior/mode {', '.join(bad) or ''}; priors: {', '.join(WORKING)}; "
              f"modes: {', '.join(MODES)}; --rounds >= 1.", file=sys.stderr)
        return 2
    if "eager" in modes:
        modes = ["eager", *[m for m in modes if m != "eager"]]
    meta = {"suite": "priors", "device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "rounds": args.rounds,
            "loadavg_start": [round(v, 2) for v in os.getloadavg()],
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "no_grad": True,
            "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR") or "~/.cache/invlab/inductor"}
    if args.device.startswith("cuda"):
        meta["gpu"] = torch.cuda.get_device_name()
    results = []
    batches = [int(b) for b in args.batch.split(",")] if args.batch else [None]
    for name in names:
        for b in batches:
            results += bench_prior(name, modes, b, args.rounds, args.device)
            write(args.json, meta, results, done=False)  # a run cut short still leaves what it measured
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    write(args.json, meta, results, done=True)
    print(f"load average {meta['loadavg_start']} → {meta['loadavg_end']}; threads {meta['threads']}")
    return 0


def write(path: str | None, meta: dict, results: list, done: bool) -> None:
    meta["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    meta["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    meta["complete"] = done
    if path:
        Path(path).write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
