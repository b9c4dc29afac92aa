"""The end of a run (rank 0 only): merge per-sample rows into results.csv, summary.json and grid.png.

Everything is read back from `samples/`, so the report covers samples finished by earlier (killed or
resumed) runs and by every DDP rank alike.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from invlab.engine.store import SampleStore, atomic_write

COLUMNS = ["index", "psnr", "ssim", "psnr_input", "ssim_input", "nfe", "seconds", "net_seconds", "status"]
METRICS = ["psnr", "ssim", "psnr_input", "ssim_input", "nfe", "seconds", "net_seconds"]
# summarised when some sample has them: the oracle record (track_best=true), an early-stopping solver's
# stop, a blind solver's kernel error, phase retrieval's metrics up to its ambiguities
# statuses whose metrics count in the means: a suspect sample is finite and its numbers are real (leaving
# it out would hide a failing run behind the samples that worked); diverged ones have none
FINISHED = ("ok", "suspect")
OPTIONAL = ["psnr_best", "iter_best", "iter_stop", "kernel_error", "psnr_aligned", "ssim_aligned",
            "snr", "snr_input", "snr_gain", "peak_pos_err", "peak_height_err",   # spectra (engine/spectra.py)
            "flicker", "flicker_input", "warp_err", "warp_err_input", "warp_err_truth"]   # videos (engine/video.py)


def write_results_csv(rows: list[dict], path: Path) -> None:
    """One row per sample, sorted by index; the fixed COLUMNS first, any extra keys after them."""
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS + extra, restval="")
            w.writeheader()
            for r in sorted(rows, key=lambda r: r["index"]):
                w.writerow(r)

    atomic_write(path, write)


def _num(value) -> float:
    """A results.csv cell as a float; empty (a column this row's solver does not write) is NaN."""
    return math.nan if value is None or value == "" else float(value)


def summarize(rows: list[dict], names: dict[str, str], expected: int) -> dict:
    """Mean ± std (population std, over samples with status ok or suspect) of every metric, and status counts.

    `expected` is the dataset size; samples never written (a run still in progress elsewhere, or
    killed) are counted as `missing`.
    """
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    if len(rows) < expected:
        counts["missing"] = expected - len(rows)
    ok = [r for r in rows if r["status"] in FINISHED]
    metrics = {}
    present = [k for k in OPTIONAL if any(k in r for r in ok)]  # columns only some solvers write
    for key in (*METRICS, *present):
        vals = np.array([_num(r.get(key)) for r in ok], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        metrics[key] = {"mean": float(vals.mean()) if vals.size else None,
                        "std": float(vals.std()) if vals.size else None, "n": int(vals.size)}
    return {**names, "samples": len(rows), "counts": counts, "metrics": metrics}


def write_summary(summary: dict, path: Path) -> None:
    text = json.dumps(summary, indent=2)
    atomic_write(path, lambda p: Path(p).write_text(text))


def write_grid(store: SampleStore, indices: list[int], path: Path, grid_max: int) -> bool:
    """Columns = the first `grid_max` samples; rows = truth | measurement | reconstruction."""
    from invlab.utils.images import grid, load_png, save_png

    strips = [load_png(store.path(i, ".png")) for i in sorted(indices)[:grid_max]
              if store.path(i, ".png").exists()]
    if not strips:
        return False
    img = grid([strips], pad=2)
    atomic_write(path, lambda p: save_png(img, p))
    return True


def format_summary(summary: dict) -> str:
    """A few console lines: what ran, how many samples by status, and mean ± population std of each metric."""
    def fmt(key: str, digits: int) -> str:
        m = summary["metrics"][key]
        return "n/a" if m["mean"] is None else f"{m['mean']:.{digits}f} ± {m['std']:.{digits}f}"

    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary["counts"].items()))
    return "\n".join([
        f"solver={summary['solver']} task={summary['task']} prior={summary['prior']} data={summary['data']}: "
        f"{summary['samples']} samples ({counts or 'none'})",
        f"  PSNR {fmt('psnr', 2)} dB (input {fmt('psnr_input', 2)})   "
        f"SSIM {fmt('ssim', 4)} (input {fmt('ssim_input', 4)})",
        f"  NFE {fmt('nfe', 1)}   seconds/sample {fmt('seconds', 3)}",
        *([f"  oracle best PSNR over the iterations {fmt('psnr_best', 2)} dB at iteration {fmt('iter_best', 0)}"]
          if "psnr_best" in summary["metrics"] else []),
        *([f"  up to the operator's ambiguities (shift, 180° rotation): PSNR {fmt('psnr_aligned', 2)} dB   "
           f"SSIM {fmt('ssim_aligned', 4)}"] if "psnr_aligned" in summary["metrics"] else []),
        *([f"  early stop at iteration {fmt('iter_stop', 0)}"] if "iter_stop" in summary["metrics"] else []),
        *([f"  SNR {fmt('snr', 2)} dB (input {fmt('snr_input', 2)}; gain {fmt('snr_gain', 2)})   peak position error "
           f"{fmt('peak_pos_err', 2)} points, height error {fmt('peak_height_err', 3)}"]
          if "snr" in summary["metrics"] else []),
        *([f"  flicker {fmt('flicker', 4)} (input {fmt('flicker_input', 4)})   warping error {fmt('warp_err', 4)} "
           f"(input {fmt('warp_err_input', 4)}; truth {fmt('warp_err_truth', 4)})"]
          if "flicker" in summary["metrics"] else []),
        *([f"  WARNING: {summary['counts']['suspect']} suspect sample(s): far from their measurement "
           f"(residual_ratio > 1) or saturated (saturation >= 0.25) in results.csv; an untrained or "
           f"mismatched prior?"] if summary["counts"].get("suspect") else []),
    ])


def finalize(run_dir: Path, n_samples: int, names: dict[str, str], grid_max: int) -> dict:
    """Merge samples into results.csv, summary.json and grid.png; return the summary."""
    store = SampleStore(run_dir)
    rows = store.rows(range(n_samples))
    write_results_csv(rows, run_dir / "results.csv")
    summary = summarize(rows, names, n_samples)
    write_summary(summary, run_dir / "summary.json")
    write_grid(store, [r["index"] for r in rows], run_dir / "grid.png", grid_max)
    return summary
