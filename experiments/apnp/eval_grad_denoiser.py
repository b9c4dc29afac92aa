"""Held-out PSNR of a gradient-domain denoiser (the trainer's own validation clamps to [0, 1], wrong for
signed gradients). Noisy inputs z + σn with fixed seeded noise on the periodic gradients of gray_test
(data=gray_test_grad); PSNR = 10·log10(1/MSE) over both channels, no clamping. For scale: soft-thresholding
(the prox of ℓ1, i.e. anisotropic TV's denoiser) at its best threshold for these very images (an oracle
choice, so an upper bound for it).

    python experiments/apnp/eval_grad_denoiser.py [checkpoint=dncnn_grad] [size=256]
"""
from __future__ import annotations

import sys

import torch

from invlab.data.gradients import gray_test_grad
from invlab.priors.learned import LearnedDenoiser
from invlab.train.common import fixed_noise


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1.0 / (a - b).pow(2).flatten(1).mean(1))


@torch.no_grad()
def main(checkpoint: str = "dncnn_grad", size: int = 256) -> None:
    ds = gray_test_grad(size=size)
    z = torch.stack([ds[i]["x"] for i in range(len(ds))])
    prior = LearnedDenoiser(checkpoint)
    print(f"{checkpoint} on gray_test_grad ({len(ds)} images, {size}², 2 channels)")
    print("| σ (/255) | noisy | soft-threshold (oracle t) | learned |")
    print("|---|---|---|---|")
    for s255 in (5, 15, 25, 50):
        s = s255 / 255.0
        noisy = z + s * fixed_noise(z, list(range(len(ds))), 1234, salt=s255 * 100)
        soft = max((float(psnr(noisy.sign() * (noisy.abs() - t * s).clamp_min(0), z).mean()), t)
                   for t in [0.25 * i for i in range(1, 17)])
        learned = float(psnr(prior.denoise(noisy, s), z).mean())
        print(f"| {s255} | {float(psnr(noisy, z).mean()):.2f} | {soft[0]:.2f} (t={soft[1]:.2f}σ) | {learned:.2f} |")


if __name__ == "__main__":
    kw = dict(a.split("=", 1) for a in sys.argv[1:])
    main(kw.get("checkpoint", "dncnn_grad"), int(kw.get("size", 256)))
