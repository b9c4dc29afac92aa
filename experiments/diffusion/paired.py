"""Paired per-digit comparison of two runs on the same digits: is method A better than method B?

    python experiments/diffusion/paired.py RUN_A RUN_B [--metric psnr] [--label-a A --label-b B]

RUN_A / RUN_B are run directories (or sweep folders holding exactly one run) with results.csv. Both solved
the same digits with the same measurements (same seed and task), so the per-digit difference removes the
digit-to-digit spread that dominates the table's ± std. Prints the mean difference A − B, its standard error,
a 95 % interval (normal approximation) and how many digits A wins.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path


def results(path: Path) -> Path:
    found = [path / "results.csv"] if (path / "results.csv").is_file() else sorted(path.rglob("results.csv"))
    if len(found) != 1:
        sys.exit(f"error: {path} holds {len(found)} results.csv files; give one run directory.")
    return found[0]


def column(path: Path, metric: str) -> dict[int, float]:
    with open(results(path)) as f:
        rows = [r for r in csv.DictReader(f) if r["status"] in ("ok", "suspect")]  # as summary.json's means
    if rows and metric not in rows[0]:
        sys.exit(f"error: {path} has no column {metric!r}.")
    return {int(r["index"]): float(r[metric]) for r in rows if r.get(metric) not in (None, "")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--metric", default="psnr")
    ap.add_argument("--label-a", default="A")
    ap.add_argument("--label-b", default="B")
    args = ap.parse_args(argv)
    a, b = column(args.run_a, args.metric), column(args.run_b, args.metric)
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        sys.exit("error: fewer than two digits in common.")
    d = [a[i] - b[i] for i in common]
    n = len(d)
    mean = sum(d) / n
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1) / n)
    wins = sum(x > 0 for x in d)
    print(f"{args.label_a} − {args.label_b} ({args.metric}, {n} digits): {mean:+.2f} ± {se:.2f} (SE), "
          f"95% [{mean - 1.96 * se:+.2f}, {mean + 1.96 * se:+.2f}], {args.label_a} better on {wins}/{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
