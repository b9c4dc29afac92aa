"""The FLAIR table (issue 15) from the run directories that reproduce.py paper=flair writes:

    python experiments/flair/make_table.py <runs> [--out DIR]      (reproduce.py paper=flair runs it)

For each task: the operator's per-frame baseline (the `*_input` columns of the FLAIR run: bicubic for SR,
Wiener for deblurring, linear frame blending for interpolation), per-frame TV (PnP-ADMM with prior=tv, run dir
`<task>_tv`, where it exists: SR and deblurring), the per-frame conditional DPM (prior=flair_frame)
and FLAIR (prior=flair_faces), each with solver=flair on the 20 test clips: PSNR, SSIM, flicker and warping
error (mean ± population std over clips), plus the paired FLAIR − per-frame DPM (and − per-frame TV) differences
(mean ± standard error).
`<runs>` holds one run dir per (task, prior), named `<task>_<prior>` (and `video_sr4_flair_faces_noface`).
Writes, into DIR (default: this folder), table_video.md, table_video.csv, frames_<task>.png
(clip 0: truth | baseline | per-frame TV where run | per-frame DPM | FLAIR, one row each) and clip_<task>.gif (the
same clip animated, side by side).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
TASKS = ("video_sr4", "video_deblur", "video_interp")
KEYS = ("psnr", "ssim", "flicker", "warp_err")


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "results.csv") as f:
        return sorted(csv.DictReader(f), key=lambda r: int(r["index"]))


def col(rs: list[dict], key: str) -> np.ndarray:
    return np.array([float(r[key]) for r in rs])


def fmt(v: np.ndarray, digits: int) -> str:
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def strip(task: str, runs: Path, out: Path, index: int = 0) -> None:
    from invlab.engine.store import SampleStore
    from invlab.utils.images import grid, save_png, to_uint8

    faces, frame = SampleStore(runs / f"{task}_flair_faces"), SampleStore(runs / f"{task}_flair_frame")
    a, b = torch.load(faces.path(index, ".pt")), torch.load(frame.path(index, ".pt"))
    from invlab.data.video import face_clips

    truth = face_clips("test", limit=index + 1).clips[index]
    clips = [truth, a["baseline"], b["x"], a["x"]]
    tv = SampleStore(runs / f"{task}_tv").path(index, ".pt")
    if tv.is_file():  # per-frame TV between the baseline and the per-frame DPM
        clips.insert(2, torch.load(tv)["x"])
    save_png(grid([[to_uint8(c[:, t]) for t in range(c.shape[1])] for c in clips], min_cell=64),
             out / f"frames_{task}.png")
    from PIL import Image   # the same clip as a GIF: truth | baseline | per-frame | FLAIR side by side

    frames = [Image.fromarray(grid([[to_uint8(c[:, t]) for c in clips]], min_cell=96)) for t in range(truth.shape[1])]
    frames[0].save(out / f"clip_{task}.gif", save_all=True, append_images=frames[1:], duration=250, loop=0)


def main(runs: Path, out: Path = HERE) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| task | method | PSNR (dB) | SSIM | flicker (×100) | warp error (×100) |", "|---|---|---|---|---|---|"]
    diffs = ["| task | FLAIR − | ΔPSNR (dB) | ΔSSIM | Δflicker (×100) | Δwarp error (×100) | clips |",
             "|---|---|---|---|---|---|---|"]
    table = []
    for task in TASKS:
        if not (runs / f"{task}_flair_faces" / "results.csv").is_file():
            continue
        faces, frame = rows(runs / f"{task}_flair_faces"), rows(runs / f"{task}_flair_frame")
        truth = col(faces, "warp_err_truth")
        base = {"video_sr4": "bicubic", "video_deblur": "Wiener", "video_interp": "linear blending"}[task]
        methods = {f"per-frame baseline ({base})": {k: col(faces, k + "_input") for k in KEYS}}
        tv = runs / f"{task}_tv"  # PnP-ADMM with 2-D TV on every frame (its weight and ρ tuned on the val clips)
        if (tv / "results.csv").is_file():
            methods["per-frame TV (PnP-ADMM)"] = {k: col(rows(tv), k) for k in KEYS}
        methods["per-frame conditional DPM"] = {k: col(frame, k) for k in KEYS}
        methods["FLAIR (temporal DPM)"] = {k: col(faces, k) for k in KEYS}
        extra = runs / f"{task}_flair_faces_noface"
        if (extra / "results.csv").is_file():
            methods["FLAIR without face weighting"] = {k: col(rows(extra), k) for k in KEYS}
        for name, m in methods.items():
            lines.append(f"| {task} | {name} | {fmt(m['psnr'], 2)} | {fmt(m['ssim'], 4)} | "
                         f"{fmt(100 * m['flicker'], 3)} | {fmt(100 * m['warp_err'], 3)} |")
            table.append({"task": task, "method": name, **{k: float(v.mean()) for k, v in m.items()}})
        lines.append(f"| {task} | truth | ∞ | 1 | 0 | {fmt(100 * truth, 3)} |")
        for other in ("per-frame conditional DPM", "per-frame TV (PnP-ADMM)"):
            if other not in methods:
                continue
            d = {k: methods["FLAIR (temporal DPM)"][k] - methods[other][k] for k in KEYS}
            se = {k: v.std(ddof=1) / math.sqrt(len(v)) for k, v in d.items()}
            diffs.append(f"| {task} | {other} | {d['psnr'].mean():+.2f} ± {se['psnr']:.2f} | {d['ssim'].mean():+.4f}"
                         f" ± {se['ssim']:.4f} | {100 * d['flicker'].mean():+.3f} ± {100 * se['flicker']:.3f} | "
                         f"{100 * d['warp_err'].mean():+.3f} ± {100 * se['warp_err']:.3f} | {len(d['psnr'])} |")
        strip(task, runs, out)
    text = "\n".join(["## FLAIR on face_clips (test split, 20 clips of 8 frames, 32×32)", "", *lines, "",
                      "Paired FLAIR − per-frame differences per clip (mean ± standard error):", "", *diffs, ""])
    (out / "table_video.md").write_text(text)
    with open(out / "table_video.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["task", "method", *KEYS])
        w.writeheader()
        w.writerows(table)
    print(text)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the folder of <task>_<prior> run dirs")
    parser.add_argument("--out", type=Path, default=HERE, help="where the tables and pictures go")
    args = parser.parse_args()
    main(args.runs, args.out)
