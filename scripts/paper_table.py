"""A paper's table next to what invlab measured: one row per job of a `run.py -m experiment=paper/<name>` sweep.

    python scripts/paper_table.py multirun/2026-12-02_10-00-00 [--csv table.csv]

Each job's resolved `config.yaml` carries `paper.rows.<task>.published` (the numbers the paper reports, with
the source in `paper.source`); its `summary.json` carries the measured means. Metrics the paper reports that
invlab does not compute here (FID, LPIPS: they need downloaded networks) are shown as published only.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

MEASURED = [("psnr", "PSNR", 2), ("ssim", "SSIM", 3), ("psnr_aligned", "PSNR aligned", 2), ("nfe", "NFE", 0)]


def jobs(root: Path) -> list[Path]:
    return sorted({p.parent for p in root.rglob("config.yaml") if (p.parent / "status.json").exists()})


def row(job: Path) -> dict:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(job / "config.yaml")
    task = str(cfg.task.name)
    paper = OmegaConf.to_container(cfg.get("paper") or {}, resolve=False)
    published = ((paper.get("rows") or {}).get(task) or {}).get("published") or {}
    out = {"paper": paper.get("name", "?"), "task": task, "solver": str(cfg.solver.name)}
    summary = json.loads((job / "summary.json").read_text()) if (job / "summary.json").exists() else None
    status = json.loads((job / "status.json").read_text()).get("status", "?")
    counts = (summary or {}).get("counts", {})
    out["samples"] = f"{counts.get('ok', 0)}/{(summary or {}).get('samples', 0)}" if summary else status
    metrics = (summary or {}).get("metrics", {})
    for key, label, digits in MEASURED:
        m = metrics.get(key)
        if m is not None:
            out[label] = f"{m['mean']:.{digits}f}"
        if key in published:
            out[f"{label} (paper)"] = published[key]
    measured_keys = {key for key, _, _ in MEASURED}
    for key, value in published.items():
        if key not in measured_keys:
            out[f"{key} (paper)"] = value
    return out


def markdown(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--csv", type=Path)
    args = ap.parse_args(argv)
    found = jobs(args.root)
    if not found:
        print(f"error: no run directories (config.yaml + status.json) under {args.root}.", file=sys.stderr)
        return 1
    rows = [row(j) for j in found]
    print(markdown(rows))
    if args.csv:
        cols = list(dict.fromkeys(k for r in rows for k in r))
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
