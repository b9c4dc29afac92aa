"""Benchmarks of the published-checkpoint path (random weights of the published shapes; no download needed).

    python scripts/bench_zoo.py --json bench_zoo.json                 # both parts
    python scripts/bench_zoo.py --part nfe --batches 1,4 --repeats 3   # one NFE of ffhq_10m at 256²
    python scripts/bench_zoo.py --part load                            # peak RSS loading a 2.2 GB ImageNet ADM

`nfe`: wall time of one ε-network evaluation (forward, no grad) of the ffhq_10m ADM (93.6 M parameters) at
256² for each batch size, median of `--repeats` after one warm-up, on this machine's threads.
`load`: writes a random-weight state dict of the 256x256_diffusion_uncond.pt shape (552.8 M parameters,
2.2 GB in float32) with torch.save, then loads it in fresh processes, once through invlab's loader
(torch.load(weights_only=True, mmap=True) + load_state_dict(assign=True)) and once the plain way
(torch.load into memory + load_state_dict copying into a built model), and reports each process's peak RSS
above its RSS after building the (randomly initialised) model and its load seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    """Current resident set size (MB), from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def bench_nfe(preset: str, size: int, batches: list[int], repeats: int, arch: dict | None = None) -> list[dict]:
    import torch

    from invlab.priors.zoo.adm import build_adm

    torch.manual_seed(0)
    net = build_adm(preset, arch).eval()
    params = sum(p.numel() for p in net.parameters())
    rows = []
    for b in batches:
        x = torch.randn(b, 3, size, size)
        t = torch.full((b,), 500.0)
        times = []
        with torch.no_grad():
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                net(x, t)
                if i:  # the first call warms up allocators and kernels
                    times.append(time.perf_counter() - t0)
        rows.append({"preset": preset, "size": size, "batch": b, "parameters": params, "threads": torch.get_num_threads(),
                     "seconds_per_nfe": statistics.median(times), "seconds_all": times})
        print(f"ADM {preset} {size}² batch {b}: {statistics.median(times):.3f} s per NFE "
              f"({torch.get_num_threads()} threads, median of {repeats})", flush=True)
    return rows


def write_random_state(path: Path, preset: str, arch: dict | None = None) -> int:
    import torch

    from invlab.priors.zoo.adm import build_adm

    net = build_adm(preset, arch)
    torch.save(net.state_dict(), path)
    return path.stat().st_size


def _load_child(path: str, preset: str, mode: str, arch_json: str) -> None:
    """Runs in a fresh process: build, measure RSS, load, report peak RSS growth."""
    import torch

    from invlab.priors.zoo.adm import build_adm, load_adm

    arch = json.loads(arch_json) or None
    if mode == "invlab":
        base = rss_mb()
        t0 = time.perf_counter()
        net = load_adm(path, preset, arch)  # builds the model, then maps and adopts the file's tensors
    else:
        base = rss_mb()
        t0 = time.perf_counter()
        net = build_adm(preset, arch)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    seconds = time.perf_counter() - t0
    touched = sum(float(p.detach().reshape(-1)[0]) for p in net.parameters())  # the weights are really there
    print(json.dumps({"mode": mode, "base_rss_mb": base, "peak_rss_mb": peak_rss_mb(),
                      "peak_above_base_mb": peak_rss_mb() - base, "load_seconds": seconds, "checksum": touched}))


def bench_load(preset: str, arch: dict | None = None, workdir: str | None = None) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / f"random_{preset}.pt"
        t0 = time.perf_counter()
        size = write_random_state(path, preset, arch)
        print(f"wrote {path.name}: {size / 2**30:.2f} GiB in {time.perf_counter() - t0:.1f} s", flush=True)
        out = {"preset": preset, "file_bytes": size}
        for mode in ("invlab", "plain"):
            res = subprocess.run([sys.executable, __file__, "--child", str(path), preset, mode, json.dumps(arch or {})],
                                 capture_output=True, text=True, check=True)
            out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
            r = out[mode]
            print(f"load ({mode}): peak RSS {r['peak_rss_mb']:.0f} MB, {r['peak_above_base_mb']:.0f} MB above the "
                  f"{r['base_rss_mb']:.0f} MB before loading, {r['load_seconds']:.1f} s", flush=True)
        out["file_mb"] = size / 2**20
        return out


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        _load_child(*sys.argv[2:6])
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("nfe", "load", "all"), default="all")
    p.add_argument("--batches", default="1,4")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--nfe-preset", default="ffhq")
    p.add_argument("--load-preset", default="imagenet")
    p.add_argument("--arch", default=None, help="JSON create_model kwargs overriding the presets (small tests)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    arch = json.loads(args.arch) if args.arch else None
    report: dict = {"meta": {"cpu_count": os.cpu_count()}}
    if args.part in ("nfe", "all"):
        report["nfe"] = bench_nfe(args.nfe_preset, args.size, [int(b) for b in args.batches.split(",")],
                                  args.repeats, arch)
    if args.part in ("load", "all"):
        report["load"] = bench_load(args.load_preset, arch)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
