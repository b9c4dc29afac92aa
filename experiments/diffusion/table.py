"""One Markdown table (task × method) from the run directories of `python reproduce.py paper=diffusion scale=full`.

    python experiments/diffusion/table.py outputs/reproduce/diffusion/full > experiments/diffusion/table.md

A method is the solver plus its variant (DPnP: the denoising sampler); DMPlug gives two rows from one run:
ES-WMV's answer (`psnr`) and the oracle best PSNR over its iterates (`psnr_best`, track_best=true).
Columns: PSNR and SSIM (mean ± std over the digits), the PSNR up to the operator's trivial ambiguities (phase
retrieval: shifts and the 180° rotation; `psnr_aligned`), NFE, seconds per digit (the batch's time / 50).
Longer budgets (the full scale's dps_1000, dpnp_full, dmplug_lr001 stages) are labelled: DPS at 1,000 steps, DPnP
at its full budget, DMPlug at 1,000 iterations; the eq_* stages' rows (`+tuned/eq=...`) say "equal tuning".
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from make_table import find_jobs, read_job  # noqa: E402

TASKS = ["deblur", "sr2", "inpaint_box", "phase_retrieval", "quantized", "deblur_nonlinear"]
ORDER = ["pnp_admm", "dps", "dps (1,000 steps)", "diffpir", "dpnp-ddpm", "dpnp-ddim", "dpnp-ddim (full)", "pnp_dm",
         "dolph", "dolph (at x̂0)", "dmplug, lr 0.1 (ES-WMV)", "dmplug, lr 0.1 (oracle)", "dmplug, lr 0.01 (ES-WMV)",
         "dmplug, lr 0.01 (oracle)", "dmplug-1000, lr 0.01 (ES-WMV)", "dmplug-1000, lr 0.01 (oracle)"]


def fmt(m: dict | None, digits: int) -> str:
    if not m or m.get("mean") is None:
        return "—"
    return f"{m['mean']:.{digits}f} ± {m['std']:.{digits}f}" if digits else f"{m['mean']:.0f}"


def rows_of(job: dict) -> list[tuple[str, str, list[str]]]:
    s, solver = job["summary"], job["solver"]
    if s is None:
        return [(job["task"], solver, ["failed: " + str(job["status"].get("error", "no summary"))] + [""] * 3)]
    m, over = s["metrics"], job["overrides"]
    sec = (m.get("seconds") or {}).get("mean")
    cost = [fmt(m.get("nfe"), 0), "—" if sec is None else f"{sec:.2f}"]
    if solver == "dpnp":
        full = "solver.dds_steps" not in over   # the dpnp_full stage: the config's (the paper's) budget
        solver = f"dpnp-{over.get('solver.denoiser_sampler', 'ddim')}" + (" (full)" if full else "")
    if solver == "dolph" and over.get("solver.at") == "x0":
        solver = "dolph (at x̂0)"
    if solver == "dps" and str(over.get("solver.steps")) == "1000":
        solver = "dps (1,000 steps)"
    if solver == "dmplug":   # the budget and the Adam lr (conf/tuned sets 0.1 on the nonlinear blur)
        cfg = job["config"].get("solver") or {}
        lr, iters = cfg.get("lr"), str(over.get("solver.iters", cfg.get("iters")))
        name = ("dmplug" if iters == "300" else f"dmplug-{iters}") \
            + (f", lr {lr:.3g}" if lr is not None else "") + (", equal tuning" if "tuned/eq" in over else "")
        stop = fmt(m.get("iter_stop"), 0)
        return [(job["task"], f"{name} (ES-WMV)", [fmt(m["psnr"], 2), fmt(m["ssim"], 4), fmt(m.get("psnr_aligned"), 2),
                                                    *cost,
                                                    f"stop at {stop}"]),
                (job["task"], f"{name} (oracle)", [fmt(m.get("psnr_best"), 2), "—", "—", *cost,
                                                    f"best at {fmt(m.get('iter_best'), 0)}"])]
    if "tuned/eq" in over:
        solver += ", equal tuning"
    return [(job["task"], solver, [fmt(m["psnr"], 2), fmt(m["ssim"], 4), fmt(m.get("psnr_aligned"), 2), *cost, ""])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    args = ap.parse_args()
    rows = [r for d in find_jobs(args.root) for r in rows_of(read_job(d))]
    rank = lambda r: (TASKS.index(r[0]) if r[0] in TASKS else 99, ORDER.index(r[1]) if r[1] in ORDER else 99)
    print("| task | method | PSNR (dB) | SSIM | PSNR aligned | NFE | s / digit | note |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for task, method, cells in sorted(rows, key=rank):
        print(f"| {task} | {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
