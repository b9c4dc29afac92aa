"""Turn a multirun directory (or any folder of run dirs) into a Markdown table, optionally a CSV.

    python scripts/make_table.py multirun/2026-11-22_10-00-00
    python scripts/make_table.py multirun/2026-11-22_10-00-00 --csv table.csv

One row per job: solver, task, then every other override that differs between the jobs (from each
job's `.hydra/overrides.yaml`), then PSNR and SSIM (mean ± std over samples with status ok), NFE,
seconds per sample, and `samples` = ok/total. A job without summary.json shows its status.json error.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

METRICS = [("PSNR", "psnr", 2), ("SSIM", "ssim", 4), ("NFE", "nfe", 0), ("seconds", "seconds", 3)]
OPTIONAL = [("PSNR best (oracle)", "psnr_best", 2), ("stop iteration", "iter_stop", 0),
            ("kernel error", "kernel_error", 4), ("PSNR aligned", "psnr_aligned", 2)]  # columns shown when some job's summary has them


def find_jobs(root: Path) -> list[Path]:
    """Directories holding a summary.json or a status.json (a job), below or at `root`."""
    dirs = {p.parent for name in ("summary.json", "status.json") for p in root.rglob(name)}
    return sorted(d for d in dirs if "wandb" not in d.parts)


def _load_yaml(path: Path):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.exists() else None


def overrides(job: Path) -> dict[str, str]:
    items = _load_yaml(job / ".hydra" / "overrides.yaml") or []
    out = {}
    for item in items:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def read_job(job: Path) -> dict:
    summary = json.loads((job / "summary.json").read_text()) if (job / "summary.json").exists() else None
    status = json.loads((job / "status.json").read_text()) if (job / "status.json").exists() else {}
    config = _load_yaml(job / "config.yaml") or _load_yaml(job / ".hydra" / "config.yaml") or {}
    ov = overrides(job)

    def name(group: str) -> str:
        if summary and summary.get(group):
            return summary[group]
        node = config.get(group)
        return str(node.get("name")) if isinstance(node, dict) and node.get("name") else ov.get(group, "?")

    return {"dir": job, "summary": summary, "status": status, "overrides": ov, "config": config,
            "solver": name("solver"), "task": name("task")}


def swept_keys(jobs: list[dict]) -> list[str]:
    """Override keys whose value is not the same in every job, besides solver and task."""
    keys = sorted({k for j in jobs for k in j["overrides"]} - {"solver", "task"})
    return [k for k in keys if not k.startswith("hydra.")
            and len({j["overrides"].get(k) for j in jobs}) > 1]


def _fmt(m: dict | None, digits: int) -> str:
    if not m or m.get("mean") is None:
        return "—"
    if digits == 0:
        return f"{m['mean']:.0f}"
    return f"{m['mean']:.{digits}f} ± {m['std']:.{digits}f}"


def metrics_of(jobs: list[dict]) -> list[tuple[str, str, int]]:
    """METRICS, plus each OPTIONAL metric some job's summary holds."""
    have = {k for j in jobs if j["summary"] for k in j["summary"]["metrics"]}
    return METRICS + [m for m in OPTIONAL if m[1] in have]


def rows(jobs: list[dict]) -> tuple[list[str], list[dict]]:
    keys = swept_keys(jobs)
    metrics = metrics_of(jobs)
    header = ["solver", "task", *keys, *(label for label, _, _ in metrics), "samples"]
    out = []
    def order(j: dict) -> tuple:  # numbers sort as numbers (iters=2 before iters=10)
        def nat(v: str):
            try:
                return (0, float(v), "")
            except ValueError:
                return (1, 0.0, v)
        return (j["solver"], j["task"], *(nat(j["overrides"].get(k, "")) for k in keys))

    for j in sorted(jobs, key=order):
        row = {"solver": j["solver"], "task": j["task"], **{k: j["overrides"].get(k, "") for k in keys}}
        s = j["summary"]
        if s is None:
            err = j["status"].get("error", "no summary.json")
            row.update({label: "—" for label, _, _ in metrics})
            row["samples"] = f"{j['status'].get('status', 'unfinished')}: {err}"
            row["_metrics"] = {}
        else:
            row.update({label: _fmt(s["metrics"].get(key), d) for label, key, d in metrics})
            done = s["counts"].get("ok", 0) + s["counts"].get("suspect", 0)   # the samples the means cover
            suspect = f" ({s['counts']['suspect']} suspect)" if s["counts"].get("suspect") else ""
            row["samples"] = f"{done}/{s['samples'] + s['counts'].get('missing', 0)}{suspect}"
            row["_metrics"] = s["metrics"]
        out.append(row)
    return header, out


def markdown(header: list[str], table: list[dict]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(r[h]).replace("|", "\\|") for h in header) + " |" for r in table]
    return "\n".join(lines)


def write_csv(header: list[str], table: list[dict], path: Path) -> None:
    """Same rows; each metric as numeric `<key>_mean`, `<key>_std` columns."""
    metrics = [m for m in METRICS + OPTIONAL if m[0] in header]
    ident = [h for h in header if h not in {label for label, _, _ in metrics}]
    cols = ident + [f"{key}_{stat}" for _, key, _ in metrics for stat in ("mean", "std")]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in table:
            vals = {f"{key}_{stat}": (r["_metrics"].get(key) or {}).get(stat)
                    for _, key, _ in metrics for stat in ("mean", "std")}
            w.writerow({**{h: r[h] for h in ident}, **{k: "" if v is None else v for k, v in vals.items()}})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="a multirun directory (or a single run directory)")
    p.add_argument("--csv", type=Path, default=None, help="also write the table as CSV here")
    args = p.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: {args.root} is not a directory.", file=sys.stderr)
        return 1
    jobs = [read_job(d) for d in find_jobs(args.root)]
    if not jobs:
        print(f"error: no run (summary.json or status.json) found under {args.root}.", file=sys.stderr)
        return 1
    header, table = rows(jobs)
    print(markdown(header, table))
    if args.csv is not None:
        write_csv(header, table, args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
