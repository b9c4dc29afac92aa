"""Kernel error per job of a BC-PnP sweep: mean ± std over samples of `kernel_error` (‖k̂ − k‖/‖k‖, written
by the engine from `Result.estimates["kernel"]`) and of PSNR, from each job's results.csv.

    python experiments/bcpnp/kernel_table.py /tmp/runs/bcpnp_test
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np


def job_overrides(job: Path) -> dict[str, str]:
    path = job / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    items = [line[2:].strip() for line in path.read_text().splitlines() if line.startswith("- ")]
    return dict(item.split("=", 1) for item in items if "=" in item)


def stat(rows: list[dict], key: str, digits: int) -> str:
    vals = np.array([float(r[key]) for r in rows if r.get(key) not in (None, "", "nan")], dtype=float)
    vals = vals[np.isfinite(vals)]
    return "—" if not vals.size else f"{vals.mean():.{digits}f} ± {vals.std():.{digits}f}"


def main(root: Path) -> int:
    jobs = sorted({p.parent for p in root.rglob("results.csv")})
    if not jobs:
        print(f"error: no results.csv under {root}.", file=sys.stderr)
        return 1
    print("| task | mode | other solver settings | PSNR | kernel error | samples |")
    print("|---|---|---|---|---|---|")
    for job in jobs:
        ov = job_overrides(job)
        other = " ".join(f"{k[7:]}={v}" for k, v in ov.items() if k.startswith("solver.") and k != "solver.mode")
        with open(job / "results.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["status"] in ("ok", "suspect")]  # as summary.json
        print(f"| {ov.get('task', '?')} | {ov.get('solver.mode', 'blind')} | {other} | {stat(rows, 'psnr', 2)} | "
              f"{stat(rows, 'kernel_error', 3)} | {len(rows)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
