"""Write the best point of a hyperparameter search as `conf/tuned/<solver>_<task>.yaml`.

    python run.py -m hparams_search=diffpir_deblur hydra.sweeper.n_trials=30
    python scripts/tune.py multirun/search_diffpir_deblur/<date>          # -> conf/tuned/diffpir_deblur.yaml
    python scripts/tune.py <sweep dir> --out /elsewhere/x.yaml --dry-run  # print it, write nothing

Reads the sweep's own files, not Optuna's memory: each trial's folder (`.hydra/hydra.yaml` and `config.yaml`:
searched parameters, sampler, data; `.hydra/overrides.yaml`, `summary.json`), scoring every trial as run.py's
job did (invlab/cli/sweeps.py `objective_value`: the mean over all samples, a trial with a diverged sample
fails). The tuned file holds the searched parameters of the best trial only; its header gives the study's
provenance: the command, the data, how many trials completed and failed, the best and the runner-up values with
their parameters. `optimization_results.yaml` (the Optuna sweeper's own record) must agree on the best value.
A search on a test split is refused here too.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from invlab.cli.sweeps import is_test_data, objective_value  # noqa: E402


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def load_search(sweep: Path) -> dict:
    """The search's settings, from a trial's own record (the Optuna sweeper writes no multirun.yaml):
    `.hydra/config.yaml` (objective, data) and `.hydra/hydra.yaml` (sweeper, choices, overrides)."""
    jobs = sorted(sweep.glob("*/.hydra/hydra.yaml"))
    if not jobs:
        fail(f"{sweep} holds no trial folders (no */.hydra/hydra.yaml); is it a sweep dir?")
    cfg = OmegaConf.load(jobs[0].parent / "config.yaml")
    hydra = OmegaConf.load(jobs[0]).hydra
    if cfg.get("objective") is None or "optuna" not in str(hydra.sweeper.get("_target_", "")).lower():
        fail(f"{sweep} is not a hyperparameter search (run it with `python run.py -m hparams_search=...`).")
    searched = list((hydra.sweeper.get("params") or {}).keys())
    if not searched:
        fail(f"the search in {sweep} has no searched parameters (hydra.sweeper.params).")
    data = OmegaConf.to_container(cfg.data, resolve=False) if cfg.get("data") is not None else {}
    if is_test_data(str(data.get("name", ""))):
        fail(f"the search in {sweep} ran on data={data.get('name')}, a test split; tune on a validation split.")
    choices = hydra.runtime.choices
    command = [o for o in hydra.overrides.task if o.split("=", 1)[0] not in searched]  # the trial's values out
    return {"objective": str(cfg.objective), "searched": searched, "data": data,
            "solver": str(choices.get("solver")), "task": str(choices.get("task")),
            "search": str(choices.get("hparams_search")), "overrides": command,
            "sampler": OmegaConf.to_container(hydra.sweeper.sampler, resolve=False),
            "params": {k: str(v) for k, v in hydra.sweeper.params.items()},
            "groups": [k for k in searched if k in choices]}  # a searched config-group choice (prior=...)


def trials(sweep: Path, search: dict) -> list[dict]:
    """Every trial folder of the sweep: its searched values and objective (NaN: failed)."""
    out = []
    for over in sorted(sweep.glob("*/.hydra/overrides.yaml")):
        job = over.parent.parent
        given = dict(o.split("=", 1) for o in yaml.safe_load(over.read_text()) if "=" in o)
        params = {k: yaml.safe_load(given[k]) for k in search["searched"] if k in given}
        value = math.nan
        summary = job / "summary.json"
        if summary.exists():
            got = objective_value(json.loads(summary.read_text()), search["objective"])
            value = math.nan if got is None else got
        out.append({"job": job.name, "params": params, "value": value})
    if not out:
        fail(f"no trial folders in {sweep}.")
    return out


def fmt(params: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v:.4g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                     for k, v in params.items())


def nested(params: dict) -> dict:
    root: dict = {}
    for key, value in params.items():
        *parents, leaf = key.split(".")
        node = root
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return root


def data_text(data: dict) -> str:
    extra = ", ".join(f"{k} {data[k]}" for k in ("start", "limit") if data.get(k) is not None)
    return f"data={data.get('name', '?')}" + (f" ({extra})" if extra else "")


def shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def render(sweep: Path, search: dict, ranked: list[dict], n_failed: int) -> str:
    best = ranked[0]
    runner = ranked[1] if len(ranked) > 1 else None
    seed = search["sampler"].get("seed")
    sampler = str(search["sampler"].get("_target_", "?")).split(".")[-1] + (f" seed {seed}" if seed is not None else "")
    command = " ".join(["python run.py -m", *search["overrides"]])
    lines = [
        "# @package _global_",
        f"# {search['solver']} on {search['task']}, tuned by an Optuna search ({sampler}; conf/hparams_search/"
        f"{search['search']}.yaml) on {data_text(search['data'])}:",
        f"#   {command}",
        f"# {len(ranked) + n_failed} trials ({len(ranked)} complete, {n_failed} failed); objective: mean "
        f"{search['objective']} over all samples.",
        f"# Searched: {'; '.join(f'{k} {v}' for k, v in search['params'].items())}.",
        f"# Best {best['value']:.2f} ({fmt(best['params'])}, trial {best['job']});",
        f"# runner-up {runner['value']:.2f} ({fmt(runner['params'])}, trial {runner['job']})."
        if runner else "# no runner-up (one complete trial).",
        f"# Written by `python scripts/tune.py {shown(sweep)}`.",
    ]
    picked = [f"{k}={best['params'][k]}" for k in search["groups"] if k in best["params"]]
    if picked:
        lines.append(f"# The best trial also chose {' '.join(picked)}: a tuned file cannot choose a config group; "
                     f"pass it on the command line.")
    return "\n".join(lines) + "\n" + body(best["params"], search["groups"])


def body(params: dict, groups: list[str]) -> str:
    """The searched values as nested YAML. A searched config-group choice (`prior: choice(a, b)`) cannot be
    one: as a value it would replace the group's whole node by a string, and Hydra refuses a defaults-list
    override in a tuned file (it is chosen by interpolation, `${solver}_${task}`); the header names it."""
    values = {k: v for k, v in params.items() if k not in groups}
    return yaml.safe_dump(nested(values), sort_keys=False) if values else "{}\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", type=Path, help="the search's sweep dir (hydra.sweep.dir)")
    ap.add_argument("--out", type=Path, help="where to write (default: conf/tuned/<solver>_<task>.yaml)")
    ap.add_argument("--dry-run", action="store_true", help="print the tuned file, write nothing")
    args = ap.parse_args(argv)
    sweep = args.sweep.resolve()
    search = load_search(sweep)
    found = trials(sweep, search)
    ranked = sorted((t for t in found if math.isfinite(t["value"])), key=lambda t: -t["value"])
    if not ranked:
        fail(f"no trial of {sweep} completed with a finite {search['objective']}.")
    record = sweep / "optimization_results.yaml"
    if record.exists():  # the sweeper's own best must be the one read from the trial folders
        told = float(OmegaConf.load(record).best_value)
        if not math.isclose(told, ranked[0]["value"], rel_tol=1e-9, abs_tol=1e-9):
            fail(f"Optuna recorded best {search['objective']} {told} but the trial folders give "
                 f"{ranked[0]['value']}; is {sweep} the folder of one search only?")
    text = render(sweep, search, ranked, len(found) - len(ranked))
    if args.dry_run:
        print(text, end="")
        return
    out = args.out or REPO / "conf" / "tuned" / f"{search['solver']}_{search['task']}.yaml"
    if out.exists():
        before = {k: v for k, v in yaml.safe_load(out.read_text()).items()} if out.read_text().strip() else {}
        print(f"replacing {out}; it had: {json.dumps(before)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}: {fmt(ranked[0]['params'])} ({search['objective']} {ranked[0]['value']:.2f}, "
          f"runner-up {ranked[1]['value']:.2f})" if len(ranked) > 1 else f"wrote {out}")
    print(text, end="")
    if search["groups"]:
        print(f"note: searched config groups ({', '.join(search['groups'])}) are named in the header only; "
              f"pass the best choice on the command line.", file=sys.stderr)


if __name__ == "__main__":
    main()
