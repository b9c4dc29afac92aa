"""The table and figure `reproduce.py` writes for a paper: our numbers from the stages' run directories, the
paper's published numbers beside them where the paper has the same row, and the difference.

A row is one (stage, method, task). Run dirs are found as scripts/make_table.py finds them (a `summary.json`
from run.py, an `ood.json` from ood.py); the method is the stage's `label` with `{solver}`, `{prior}`,
`{detector}` or any `{override.key}` of the job filled in. Jobs of one row (seeds) are pooled: mean, population
std and n over all their samples (an ood.json run counts as one value). Published numbers come from the paper
config's `published:` list (method, task, value, source) or from a job's own `paper.rows.<task>.published`
(conf/experiment/paper/*_ffhq.yaml), never from anywhere else.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

_FIELD = re.compile(r"\{([^{}]+)\}")


def _overrides(job: Path) -> dict[str, str]:
    path = job / ".hydra" / "overrides.yaml"
    items = OmegaConf.to_container(OmegaConf.load(path)) if path.exists() else []
    return {str(i).partition("=")[0].lstrip("+~"): str(i).partition("=")[2] for i in items or []}


def _published_in_job(job: Path, task: str, metric: str):
    """`paper.rows.<task>.published.<metric>` of a job's resolved config (the FFHQ paper configs)."""
    path = job / "config.yaml"
    if not path.exists():
        return None
    cfg = OmegaConf.load(path)
    value = OmegaConf.select(cfg, f"paper.rows.{task}.published.{metric}", default=None)
    source = OmegaConf.select(cfg, "paper.source", default=None)
    return None if value is None else {"value": float(value), "source": str(source or "the job's paper config")}


def read_run(job: Path, metric: str) -> dict | None:
    """One run's names and its {mean, std, n} for `metric`; None for a folder that is no run."""
    names = _overrides(job)
    if (job / "summary.json").exists():
        s = json.loads((job / "summary.json").read_text())
        names.update(solver=s.get("solver", "?"), task=s.get("task", "?"), prior=s.get("prior", "?"))
        m = s.get("metrics", {}).get(metric) or {}
        value = None if m.get("mean") is None else (float(m["mean"]), float(m.get("std") or 0.0), int(m["n"]))
    elif (job / "ood.json").exists():
        r = json.loads((job / "ood.json").read_text())
        names.update(detector=r.get("detector", "?"), task=r.get("pair", "?"), prior=Path(str(r.get("prior"))).stem)
        value = None if r.get(metric) is None else (float(r[metric]), 0.0, 1)
    elif (job / "status.json").exists():
        value = None
    else:
        return None
    status = json.loads((job / "status.json").read_text()) if (job / "status.json").exists() else {}
    return {"dir": job, "names": names, "value": value, "status": status.get("status", "unfinished"),
            "error": status.get("error")}


def label_of(template: str, names: dict) -> str:
    """`template` with each `{key}` replaced by the job's value (a checkpoint path by its last two parts)."""
    def value(m) -> str:
        v = str(names.get(m.group(1), "?"))
        return "/".join(Path(v).parts[-2:]) if "/" in v else v
    return _FIELD.sub(value, template)


def pool(values: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    """Mean, population std and n of the union of groups given as (mean, population std, n)."""
    n = sum(v[2] for v in values)
    mean = sum(v[0] * v[2] for v in values) / n
    second = sum((v[1] ** 2 + v[0] ** 2) * v[2] for v in values) / n
    return mean, math.sqrt(max(second - mean ** 2, 0.0)), n


def collect(paper: DictConfig, out: Path, stages: list[str]) -> list[dict]:
    """The table's rows, in stage order, from the run dirs under out/<stage> of the table's stages."""
    metric = str(paper.table.metric)
    published = {(str(p.method), str(p.task)): {"value": float(p.value), "source": str(p.source)}
                 for p in paper.get("published") or []}
    rows: dict[tuple, dict] = {}
    for name in stages:
        stage = paper.stages[name]
        if stage.get("table") is False:
            continue
        root = out / name
        if not root.is_dir():
            continue
        jobs = sorted({p.parent for f in ("summary.json", "ood.json", "status.json") for p in root.rglob(f)
                       if "wandb" not in p.parts and ".submitit" not in p.parts})
        for job in jobs:
            run = read_run(job, metric)
            if run is None:
                continue
            method = label_of(str(stage.get("label") or "{solver}"), run["names"])
            task = str(run["names"].get("task", "?"))
            row = rows.setdefault((name, method, task), {"stage": name, "method": method, "task": task,
                                                         "values": [], "problems": []})
            if run["value"] is not None:
                row["values"].append(run["value"])
            if run["status"] != "ok":
                row["problems"].append(f"{run['status']}: {run['error'] or run['dir'].name}")
            row.setdefault("published", published.get((method, task)) or _published_in_job(job, task, metric))
    for row in rows.values():
        row["ours"] = pool(row["values"]) if row["values"] else None
    return list(rows.values())


def markdown(paper: DictConfig, rows: list[dict], scale: str, command: str) -> str:
    digits = int(paper.table.get("digits", 2))
    unit = str(paper.table.get("label", paper.table.metric))
    lines = [f"# {paper.title}: {unit}", "",
             f"Written by `{command}` (scale={scale}); mean ± population std over the row's samples (n). "
             f"Published numbers only where the paper has the same row; Δ = ours − paper.", "",
             f"| stage | method | task | {unit} (ours) | n | paper | Δ | notes |", "|---|---|---|---:|---:|---:|---:|---|"]
    sources = []
    for r in rows:
        ours = r["ours"]
        cell = "—" if ours is None else f"{ours[0]:.{digits}f} ± {ours[1]:.{digits}f}"
        n = "—" if ours is None else str(ours[2])
        pub, diff = "—", "—"
        if r.get("published"):
            p = r["published"]["value"]
            if r["published"]["source"] not in sources:
                sources.append(r["published"]["source"])
            pub = f"{p:.{digits}f} [{sources.index(r['published']['source']) + 1}]"
            diff = "—" if ours is None else f"{ours[0] - p:+.{digits}f}"
        notes = "; ".join(r["problems"]).replace("|", "\\|")
        lines.append(f"| {r['stage']} | {r['method']} | {r['task']} | {cell} | {n} | {pub} | {diff} | {notes} |")
    if not rows:
        lines.append("| — | no run directories with results | | | | | | |")
    lines += [""] + [f"[{i + 1}] {s}" for i, s in enumerate(sources)]
    for note in paper.table.get("notes") or []:
        lines += ["", str(note)]
    return "\n".join(lines).rstrip() + "\n"


def figure(paper: DictConfig, rows: list[dict], path: Path) -> None:
    """Grouped bars: one group per task, one bar per (stage, method), error bars = std; the paper's as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = list(dict.fromkeys(f"{r['stage']}: {r['method']}" for r in rows))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(tasks) * len(methods) + 2), 4.5))
    cmap = plt.get_cmap("tab20")
    for k, method in enumerate(methods):
        xs, ys, es, px, py = [], [], [], [], []
        for t, task in enumerate(tasks):
            for r in rows:
                if f"{r['stage']}: {r['method']}" == method and r["task"] == task:
                    x = t - 0.4 + width * (k + 0.5)
                    if r["ours"] is not None:
                        xs.append(x), ys.append(r["ours"][0]), es.append(r["ours"][1])
                    if r.get("published"):
                        px.append(x), py.append(r["published"]["value"])
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=method, color=cmap(k % 20))
        if px:
            ax.plot(px, py, "k_", markersize=12, markeredgewidth=2)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel(str(paper.table.get("label", paper.table.metric)))
    ax.set_title(f"{paper.title} (bars: ours ± std; black dashes: published)" if any(r.get("published") for r in rows)
                 else f"{paper.title} (ours ± std)")
    ours = [r["ours"][0] - r["ours"][1] for r in rows if r["ours"]]
    if ours and str(paper.table.metric) not in ("auroc", "fpr95"):
        ax.set_ylim(bottom=max(0.0, min(ours) - 3.0))
    ax.legend(fontsize=7, ncol=2 if len(methods) > 6 else 1, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
