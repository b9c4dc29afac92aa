"""Seconds of one RED step's parts on a batch of 4 images, 128², 90 angles, one CPU thread: the full data
gradient Aᵀ(Ax − y), ODER's minibatch gradient (30 of 90 angles) and one dncnn_gray call.

    OMP_NUM_THREADS=1 python experiments/oder/time_step.py
"""
import time

import torch
from omegaconf import OmegaConf

from invlab.ops.radon import Radon
from invlab.utils.config import build

torch.set_num_threads(1)
A = Radon.parallel_beam((1, 128, 128), n_angles=90)
x = torch.rand(4, 1, 128, 128, generator=torch.Generator().manual_seed(0))
y = A(x)
prior = build(OmegaConf.load("conf/prior/dncnn_gray.yaml"))
gen, sigma = torch.Generator().manual_seed(0), torch.full((4,), 0.035)


def seconds(f, n: int = 10) -> float:
    f()
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t0) / n


with torch.no_grad():
    parts = {"full data gradient (90 angles)": seconds(lambda: A.grad(x, y)),
             "minibatch data gradient (30 angles)": seconds(lambda: A.stochastic_grad(x, y, 1 / 3, gen)),
             "dncnn_gray denoiser call": seconds(lambda: prior.denoise(x, sigma))}
for name, s in parts.items():
    print(f"{name:40s} {s:.3f} s")
den = parts["dncnn_gray denoiser call"]
full, mini = parts["full data gradient (90 angles)"], parts["minibatch data gradient (30 angles)"]
print(f"gradient cost ratio {mini / full:.2f}; step cost ratio (gradient + denoiser) {(mini + den) / (full + den):.2f}")
