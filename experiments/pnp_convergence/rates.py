"""Convergence-rate summary of the PnP-ADMM residual curves written by curves.py (methods.md F).

    python experiments/pnp_convergence/rates.py experiments/pnp_convergence/curves.json \
        experiments/pnp_convergence/curves_cs_rho1.json

For each (task, ρ, prior) it prints, from the batch-mean residual r_k = ‖x_k − x_{k−1}‖ (per-pixel RMS):
- the power-law exponent p of r_k ~ k^p fitted (least squares in log–log) over k ∈ [10, 50] and [50, K];
- the share of iterations with r_{k+1} ≤ r_k (monotone decrease);
- k · min_{j≤k} r_j² at k = 10, 50, K: the theorem for nonconvex PnP-ADMM with an MMSE denoiser (and ρ large
  enough) gives min_{j≤k} r_j² = O(1/k), so this quantity must stay bounded (here: not grow) as k grows;
- PSNR at k = 10, 50, K.
"""
from __future__ import annotations

import argparse
import json
import math
import re


def loglog_slope(r: list[float], lo: int, hi: int) -> float:
    pts = [(math.log(k), math.log(r[k - 1])) for k in range(lo, hi + 1) if r[k - 1] > 0]
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    return sum((a - mx) * (b - my) for a, b in pts) / sum((a - mx) ** 2 for a, _ in pts)


def summary(r: list[float], psnr: list[float]) -> dict:
    K = len(r)
    mono = sum(r[i + 1] <= r[i] for i in range(K - 1)) / (K - 1)
    kmin = {k: k * min(x * x for x in r[:k]) for k in (10, 50, K)}
    return {"p_10_50": loglog_slope(r, 10, 50), "p_50_K": loglog_slope(r, 50, K), "monotone": mono,
            "kmin": kmin, "psnr": {k: psnr[k - 1] for k in (10, 50, K)}, "r_last": r[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    print("| task | ρ | prior | p (k 10–50) | p (k 50–K) | monotone | k·min r² at 10 / 50 / K | r_K | PSNR at 10 / 50 / K |")
    print("|---|---|---|---:|---:|---:|---|---:|---|")
    for path in args.files:
        d = json.load(open(path))
        for task, runs in d["runs"].items():
            m = re.search(r"rho=([0-9.]+)", str(d["settings"].get("solver", {}).get(task, "")))
            rho = m.group(1) if m else "?"
            for prior, v in runs.items():
                s = summary(v["residual_mean"], v["psnr_mean"])
                km = " / ".join(f"{x:.1e}" for x in s["kmin"].values())
                ps = " / ".join(f"{x:.2f}" for x in s["psnr"].values())
                print(f"| {task} | {rho} | {prior} | {s['p_10_50']:.2f} | {s['p_50_K']:.2f} | {s['monotone']:.2f} "
                      f"| {km} | {s['r_last']:.1e} | {ps} |")


if __name__ == "__main__":
    main()
