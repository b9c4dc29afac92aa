"""Validation sweep for experiments/pnp_ttt: phantoms 8–11 of data=phantoms (n=12, 64², seed 0; the test set
is 0–7), task=mri (σ_y 0.01, one mask per R from run seed 0) with prior=dncnn_gray. Prints one Markdown row
per (R, solver settings): mean PSNR (clamped, as the engine) after 50/100/150 final PnP-PGD iterations.

    python experiments/pnp_ttt/tune.py "ttt_steps=0" "ttt_steps=10,neumann_iters=0" ...
"""
from __future__ import annotations

import os
import sys
import time

import torch
from omegaconf import OmegaConf

from invlab.data.datasets import phantoms
from invlab.priors.learned import LearnedDenoiser
from invlab.solvers.pnp_ttt import PnPTTT
from invlab.utils.config import build

INDICES, CHECK = [8, 9, 10, 11], (50, 100, 150)
BASE = dict(OmegaConf.to_container(OmegaConf.load("conf/solver/pnp_ttt.yaml")))
BASE = {k: v for k, v in BASE.items() if k not in ("name", "_target_")}


def main(specs: list[str]) -> None:
    data = phantoms(n=12, size=64, seed=0)
    x = torch.stack([data[i]["x"] for i in INDICES])
    prior = LearnedDenoiser("dncnn_gray")
    print("| R | settings (over conf/solver/pnp_ttt.yaml, iters 150) | PSNR@50 | PSNR@100 | PSNR@150 "
          "| per image @100 | s |")
    print("|---|---|---|---|---|---|---|")
    for acc in [float(a) for a in os.environ.get("ACCS", "4,8").split(",")]:
        task = OmegaConf.load("conf/task/mri.yaml")
        task.operator.acceleration = acc
        A, y = build(task).measure(x, INDICES, seed=0)
        for spec in specs:
            kw = {**BASE, "iters": max(CHECK), **eval(f"dict({spec})")}
            psnr: dict[int, torch.Tensor] = {}

            def record(k, xk, info, steps=kw["ttt_steps"]):
                if k - steps + 1 in CHECK:
                    psnr[k - steps + 1] = -10 * torch.log10((xk.clamp(0, 1) - x).pow(2).flatten(1).mean(1))

            t0 = time.time()
            PnPTTT(**kw)(y, A, prior, generator=torch.Generator().manual_seed(0), callback=record)
            print(f"| {acc:g} | {spec} | " + " | ".join(f"{psnr[c].mean():.2f}" for c in CHECK) +
                  f" | {', '.join(f'{v:.2f}' for v in psnr[100].tolist())} | {time.time() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
