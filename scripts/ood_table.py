"""AUROC table of `ood.py` runs: one row per detector, one column per pair, mean ± std over seeds.

    python scripts/ood_table.py multirun/ood/2026-11-22_07-00-00 [more dirs] [--json table.json]

Reads every ood.json below the given folders (one per job); a (detector, pair) seen with several seeds
shows mean ± sample std and the seed count. Also prints FPR at 95% TPR and seconds per run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def collect(roots: list[Path]) -> dict:
    runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for root in roots:
        for path in sorted(root.rglob("ood.json")):
            d = json.loads(path.read_text())
            runs[(d["detector"], d["pair"])].append(
                {"seed": d.get("seed"), "auroc": d["auroc"], "fpr95": d.get("fpr95"), "seconds": d.get("seconds"),
                 "n": [d.get("n_fit"), d.get("n_id"), d.get("n_ood")], "path": str(path.parent)})
    return runs


def cell(values: list[float], digits: int = 3) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(runs: dict, key: str = "auroc") -> str:
    detectors = sorted({d for d, _ in runs})
    pairs = sorted({p for _, p in runs})
    lines = ["| detector | " + " | ".join(pairs) + " |", "|---|" + "---:|" * len(pairs)]
    for det in detectors:
        row = [cell([r[key] for r in runs.get((det, p), []) if r[key] is not None]) for p in pairs]
        lines.append(f"| {det} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, default=None, help="also write every run's numbers here")
    args = ap.parse_args(argv)
    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"error: not a folder: {missing[0]}", file=sys.stderr)
        return 1
    runs = collect(args.dirs)
    if not runs:
        print(f"error: no ood.json below {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 1
    seeds = {(d, p): sorted(r["seed"] for r in rs) for (d, p), rs in runs.items()}
    print("AUROC (OOD positive; mean ± std over seeds)\n")
    print(table(runs, "auroc"))
    print("\nFPR at 95% TPR\n")
    print(table(runs, "fpr95"))
    print("\nseconds per run\n")
    print(table(runs, "seconds"))
    print("\nseeds: " + "; ".join(f"{d}/{p}: {s}" for (d, p), s in sorted(seeds.items())))
    if args.json:
        args.json.write_text(json.dumps({f"{d}/{p}": rs for (d, p), rs in sorted(runs.items())}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
