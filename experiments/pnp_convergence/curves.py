"""PnP-ADMM with fixed ρ and σ, per-iteration residual and PSNR curves for several denoisers (methods.md F).

    python experiments/pnp_convergence/curves.py --priors dncnn_gray_sn drunet_gray --tasks deblur cs \\
        --data gray_test --data-set size=128 limit=4 --iters 200 \\
        --solver-set deblur:rho=0.1 deblur:sigma_den_factor=2 cs:rho=0.1 cs:sigma_den_factor=2 \\
        --out experiments/pnp_convergence/curves.json --plot experiments/pnp_convergence/residuals.png

Priors are conf/prior options. Every (task, prior) pair runs conf/solver/pnp_admm.yaml with rho_growth=1 and
the task's `--solver-set TASK:key=value` overrides (the same for every prior), on the whole data batch.
Per iteration k it records, per image, the absolute residual ‖x_k − x_{k−1}‖ as a per-pixel RMS (the
solver's relative change ‖x_k − x_{k−1}‖/‖x_k‖ times ‖x_k‖/√n) and the PSNR against the ground truth.
Writes JSON (curves and settings), prints a Markdown PSNR table, and optionally plots the residuals.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path


def load_prior(spec: str):
    """A conf/prior option by name, else a checkpoint name or path (prior=learned)."""
    from invlab.utils.config import build, load_option

    conf = Path(__file__).resolve().parents[2] / "conf" / "prior"
    if (conf / f"{spec}.yaml").is_file():
        return build(load_option("prior", spec, []))
    return build(load_option("prior", "learned", [f"checkpoint={spec}"]))


def parse_solver_sets(items: list[str], tasks: list[str]) -> dict[str, list[str]]:
    sets: dict[str, list[str]] = {t: [] for t in tasks}
    for item in items:
        task, _, kv = item.partition(":")
        if task not in sets or "=" not in kv:
            raise SystemExit(f"--solver-set wants TASK:key=value with TASK in {tasks}, got {item!r}")
        sets[task].append(kv)
    return sets


def run_pair(x, task, prior, solver):
    """Solve the batch; return per-image residual (RMS) and PSNR lists per iteration, and final PSNR."""
    import torch

    n = x[0].numel()
    res_rms: list[list[float]] = []
    psnr: list[list[float]] = []

    def callback(k, xk, info):
        norm = xk.flatten(1).norm(dim=1)
        res_rms.append((info["residual"] * norm / math.sqrt(n)).tolist())
        mse = (xk.clamp(0, 1) - x).flatten(1).pow(2).mean(dim=1)
        psnr.append((-10 * torch.log10(mse)).tolist())

    A, y = task.measure(x, list(range(x.shape[0])), seed=0)
    with torch.no_grad():
        result = solver(y, A, prior, callback=callback)
    # transpose to [image][iteration]
    return ([list(r) for r in zip(*res_rms)], [list(p) for p in zip(*psnr)], result.seconds)


def jacobian_norm(prior, z, sigma: float, iters: int = 25) -> list[float]:
    """‖∂D_σ(z)/∂z‖₂ per image by power iteration on JᵀJ (J·v by forward-over-backward autograd jvp,
    Jᵀ·u by vjp): > 1 means the denoiser is locally expansive at z."""
    import torch
    from torch.autograd.functional import jvp, vjp

    def f(u):
        return prior.denoise(u, sigma)

    g = torch.Generator().manual_seed(0)
    v = torch.randn(z.shape, generator=g)
    v = v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    est = torch.zeros(z.shape[0])
    for _ in range(iters):
        _, jv = jvp(f, z, v)
        _, w = vjp(f, z, jv)
        est = w.flatten(1).norm(dim=1).sqrt()          # ‖JᵀJv‖ → σ_max² as v → top right singular vector
        v = w / w.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, 1, 1, 1)
    return est.tolist()


def loglog_slope(curve: list[float], lo: int, hi: int) -> float:
    """Least-squares slope of log r_k against log k over iterations k = lo..hi (1-based)."""
    ks = [math.log(k) for k in range(lo, hi + 1)]
    rs = [math.log(max(curve[k - 1], 1e-300)) for k in range(lo, hi + 1)]
    mk, mr = sum(ks) / len(ks), sum(rs) / len(rs)
    return sum((a - mk) * (b - mr) for a, b in zip(ks, rs)) / sum((a - mk) ** 2 for a in ks)


def plot(report: dict, path: str) -> None:
    """Residual vs iteration on a log y-axis, one panel per task (drawn with PIL: the venv has no matplotlib)."""
    from PIL import Image, ImageDraw, ImageFont

    tasks = list(report["runs"])
    W, H, L, R, T, B = 520, 400, 70, 15, 45, 45          # panel size and margins
    img = Image.new("RGB", (W * len(tasks), H), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=12)
    small = ImageFont.load_default(size=10)
    colors = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]
    light = [tuple(int(c + 0.6 * (255 - c)) for c in col) for col in colors]
    for j, tname in enumerate(tasks):
        runs = report["runs"][tname]
        x0, x1, y0, y1 = j * W + L, (j + 1) * W - R, T, H - B
        vals = [v for run in runs.values() for r in run["residual"] for v in r if v > 0]
        lo, hi = math.floor(math.log10(min(vals))), math.ceil(math.log10(max(vals)))
        n = max(len(run["residual_mean"]) for run in runs.values())

        def px(k, v):
            return (x0 + (x1 - x0) * (k - 1) / max(n - 1, 1),
                    y1 - (y1 - y0) * (math.log10(max(v, 10.0 ** lo)) - lo) / (hi - lo))

        for e in range(lo, hi + 1):                    # decades
            yy = px(1, 10.0 ** e)[1]
            d.line([(x0, yy), (x1, yy)], fill=(225, 225, 225))
            d.text((x0 - 6, yy), f"1e{e}", fill="black", font=small, anchor="rm")
        for k in range(0, n + 1, 50 if n >= 100 else 10):
            xx = px(max(k, 1), 10.0 ** lo)[0]
            d.line([(xx, y1), (xx, y1 + 4)], fill="black")
            d.text((xx, y1 + 6), str(max(k, 1)), fill="black", font=small, anchor="mt")
        d.rectangle([x0, y0, x1, y1], outline="black")
        for c, (pname, run) in enumerate(runs.items()):
            for r in run["residual"]:
                d.line([px(k + 1, v) for k, v in enumerate(r)], fill=light[c % 4], width=1)
        for c, (pname, run) in enumerate(runs.items()):
            d.line([px(k + 1, v) for k, v in enumerate(run["residual_mean"])], fill=colors[c % 4], width=3)
            d.line([(x1 - 200, y0 + 14 + 16 * c), (x1 - 180, y0 + 14 + 16 * c)], fill=colors[c % 4], width=3)
            d.text((x1 - 175, y0 + 14 + 16 * c), f"{pname} ({run['psnr_final_mean']:.2f} dB)", fill="black",
                   font=small, anchor="lm")
        d.text(((x0 + x1) / 2, 8), f"PnP-ADMM {tname}: {report['settings']['solver'][tname]}".replace("σ", "sigma"), fill="black",
               font=font, anchor="mt")  # (PIL's default font has no σ)
        d.text(((x0 + x1) / 2, 26), "RMS per pixel of x_k - x_(k-1) (thick: mean over images)", fill="black",
               font=small, anchor="mt")
        d.text(((x0 + x1) / 2, H - 14), "iteration k", fill="black", font=small, anchor="mt")
    img.save(path)
    print(f"wrote {path}")


def table(report: dict, at: list[int]) -> str:
    n = report["settings"]["iters"]
    res_at = [k for k in (10, 50, 100) if k < n] + [n]
    lines = ["| task | denoiser | " + " | ".join(f"PSNR@{k}" for k in at) + f" | PSNR@{n} (final) | "
             + " | ".join(f"res@{k}" for k in res_at) + " |",
             "|---" * (len(at) + 3 + len(res_at)) + "|"]
    for tname, runs in report["runs"].items():
        for pname, run in runs.items():
            cells = [f"{run['psnr_mean'][k - 1]:.2f}" for k in at if k <= len(run["psnr_mean"])]
            lines.append(f"| {tname} | {pname} | " + " | ".join(cells) + f" | {run['psnr_final_mean']:.2f} | "
                         + " | ".join(f"{run['residual_mean'][k - 1]:.1e}" for k in res_at) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--priors", nargs="+", required=True)
    ap.add_argument("--tasks", nargs="+", default=["deblur", "cs"])
    ap.add_argument("--task-set", nargs="*", default=[], help="TASK:key=value overrides of conf/task options")
    ap.add_argument("--data", default="gray_test")
    ap.add_argument("--data-set", nargs="*", default=["size=128", "limit=4"])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--solver-set", nargs="*", default=[], help="TASK:key=value overrides of conf/solver/pnp_admm")
    ap.add_argument("--at", nargs="*", type=int, default=[1, 10, 50, 100])
    ap.add_argument("--lipschitz", action="store_true", help="also estimate ‖J_D‖₂ at noisy test images")
    ap.add_argument("--out", default=None, help="JSON of the curves")
    ap.add_argument("--plot", default=None, help="PNG of the residual curves")
    ap.add_argument("--replot", default=None, help="only redraw --plot (and the table) from this JSON")
    args = ap.parse_args(argv)
    if args.replot:
        report = json.loads(Path(args.replot).read_text())
        print(table(report, args.at))
        if args.plot:
            plot(report, args.plot)
        return report

    import torch

    from invlab.utils.config import build, load_option

    torch.manual_seed(0)
    t0 = time.perf_counter()
    data = build(load_option("data", args.data, args.data_set))
    x = torch.stack([data[i]["x"] for i in range(len(data))]).float()
    priors = {p: load_prior(p) for p in args.priors}
    solver_sets = parse_solver_sets(args.solver_set, args.tasks)
    task_sets = parse_solver_sets(args.task_set, args.tasks)
    report = {"settings": {"data": args.data, "data_set": args.data_set, "n": int(x.shape[0]),
                           "shape": list(x.shape[1:]), "iters": args.iters, "solver": {}, "task": task_sets},
              "runs": {}}
    for tname in args.tasks:
        task = build(load_option("task", tname, task_sets[tname]))
        sets = [f"iters={args.iters}", "rho_growth=1.0", *solver_sets[tname]]
        solver_cfg = load_option("solver", "pnp_admm", sets)
        report["settings"]["solver"][tname] = (f"rho={solver_cfg.rho}, "
                                               + (f"σ_den={solver_cfg.sigma_den_factor}·σ_y (σ_y={task.sigma_y})"
                                                  if solver_cfg.sigma_den_factor is not None
                                                  else f"σ_den={solver_cfg.sigma_den}"))
        solver = build(solver_cfg)
        report["runs"][tname] = {}
        for pname, prior in priors.items():
            res, psnr, secs = run_pair(x, task, prior, solver)
            mean = lambda rows: [sum(col) / len(col) for col in zip(*rows)]  # noqa: E731
            r_mean, p_mean = mean(res), mean(psnr)
            run = {"residual": res, "psnr": psnr, "residual_mean": r_mean, "psnr_mean": p_mean,
                   "psnr_final": [p[-1] for p in psnr], "psnr_final_mean": p_mean[-1], "seconds": secs,
                   "slope_10_50": loglog_slope(r_mean, 10, min(50, args.iters)),
                   "slope_50_end": loglog_slope(r_mean, min(50, args.iters - 1), args.iters)}
            if args.lipschitz:
                sig = (solver.sigma_den_factor * task.sigma_y if solver.sigma_den_factor is not None
                       else solver.sigma_den)
                z = x + sig * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
                run["jacobian_norm_noisy"] = jacobian_norm(prior, z, sig)
                print(f"{tname:>7} {pname:>15}: ‖J_D‖₂ at x + σ·n (σ={sig:.3g}): "
                      + ", ".join(f"{v:.3f}" for v in run["jacobian_norm_noisy"]), flush=True)
            report["runs"][tname][pname] = run
            print(f"{tname:>7} {pname:>15}: final PSNR {run['psnr_final_mean']:.2f} dB "
                  f"({', '.join(f'{v:.2f}' for v in run['psnr_final'])}), residual {r_mean[0]:.2e} → "
                  f"{r_mean[-1]:.2e}, log-log slope {run['slope_10_50']:.2f} / {run['slope_50_end']:.2f}, "
                  f"{secs:.1f} s", flush=True)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(table(report, args.at))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=None))
        print(f"wrote {args.out} ({report['seconds']} s)")
    if args.plot:
        plot(report, args.plot)
    return report


if __name__ == "__main__":
    main()
