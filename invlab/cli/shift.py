"""`python shift.py`: clean vs measurement-domain KL(p‖q) for one in-distribution prior
p and several others q, on images of p's data (see invlab.analysis.shift).

    python shift.py --p dncnn_mnist04 --q dncnn_mnist dncnn_gray \\
        --data mnist_test --data-set "classes=[0,1,2,3,4]" limit=100 --task inpaint_blocks mri \\
        --sigma-max 0.19 --out shift.json

Priors are checkpoint names or paths (prior=learned), or the name of another conf/prior option (tv,
gaussian). Data and tasks are conf/data and conf/task options (`--data-set` / `--task-set` override
their keys); task `inpaint_blocks` is the paper's operator (16×16 grid of cells dropped with p = 0.5,
σ_y = 0.1). Prints a table and writes JSON: per q, the clean estimate and each task's estimate.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "conf"  # repo root = parent of invlab/


def load_node(group: str, name: str, sets: list[str]):
    from invlab.utils.config import load_option

    return load_option(group, name, sets)


def load_prior(spec: str):
    from invlab.priors.learned import LearnedDenoiser
    from invlab.utils.config import build

    if spec != "learned" and (CONF / "prior" / f"{spec}.yaml").is_file():
        return build(load_node("prior", spec, []))
    return LearnedDenoiser(spec)


def load_task(name: str, sets: list[str]):
    from invlab.utils.config import build

    return build(load_node("task", name, sets))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--p", required=True, help="the in-distribution prior")
    ap.add_argument("--q", nargs="+", required=True, help="the other priors")
    ap.add_argument("--data", default="mnist_test")
    ap.add_argument("--data-set", nargs="*", default=[], help="data overrides, key=value")
    ap.add_argument("--task", nargs="*", default=["inpaint_blocks"], help="conf/task options (inpaint_blocks: the paper's)")
    ap.add_argument("--task-set", nargs="*", default=[], help="overrides for every task, key=value")
    ap.add_argument("--fill", type=float, default=0.5, help="value put into dropped pixels")
    ap.add_argument("--sigma-min", type=float, default=0.002)
    ap.add_argument("--sigma-max", type=float, default=0.19, help="≤ the priors' trained noise range")
    ap.add_argument("--n-sigmas", type=int, default=30)
    ap.add_argument("--spacing", default="log", choices=["log", "linear"])
    ap.add_argument("--reps", type=int, default=1, help="noise draws per image")
    ap.add_argument("--tails", action="store_true", help="add the σ→0 and σ→∞ end pieces")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="shift.json")
    args = ap.parse_args(argv)

    import torch

    from invlab.analysis.shift import shift_kl, sigma_grid
    from invlab.ops.task import measured_images
    from invlab.utils.config import build

    t0 = time.perf_counter()
    p = load_prior(args.p)
    qs = {name: load_prior(name) for name in args.q}
    data = build(load_node("data", args.data, args.data_set))
    x = torch.stack([data[i]["x"] for i in range(len(data))]).float()
    for prior in (p, *qs.values()):
        prior.check_input(x[:1])
    sigmas = sigma_grid(args.sigma_min, args.sigma_max, args.n_sigmas, args.spacing)
    sets = {"clean": x}
    for name in args.task:
        sets[name] = measured_images(load_task(name, args.task_set), x, seed=args.seed, fill=args.fill)
    report = {"p": args.p, "data": args.data, "n": int(x.shape[0]), "sigmas": sigmas.tolist(), "kl": {}}
    for qname, q in qs.items():
        report["kl"][qname] = {}
        for sname, samples in sets.items():
            r = shift_kl(p, q, samples, sigmas, reps=args.reps, seed=args.seed, tails=args.tails)
            report["kl"][qname][sname] = {"kl": r.kl, "stderr": r.stderr, "integrand": r.integrand}
            print(f"KL({args.p} ‖ {qname}) from {sname:>14}: {r.kl:.5g} ± {r.stderr:.2g}", flush=True)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out} ({report['seconds']} s)")
    return report


def cli() -> None:
    from invlab.cli.errors import user_message

    try:
        main()
    except Exception as exc:  # user errors in one sentence, as the other entry points
        msg = user_message(exc)
        if msg is None:
            raise
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
