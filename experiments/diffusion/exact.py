"""Every diffusion sampler against an exact posterior (issue 4 item 3), as one table.

    python experiments/diffusion/exact.py [--n 1000] > experiments/diffusion/exact.md

The model is the tests' (invlab.analysis.exact.linear_gaussian_problem, seeds 0/3): a Gaussian prior on 4×4
images served through the exact ε-network, y = A x + σ_y n with a dense 8×16 A, so the posterior is closed
form and every denoiser call is exact: what remains is each sampler's own discretisation, its bias, and
Monte-Carlo error. Each row runs N parallel chains for the one y and compares the samples with the
sampler's target: the denoising posterior p(x | x + ηw) for the denoising diffusion sampler, the prior for
plain DDPM, the posterior under the smoothed likelihood at the final coupling for DPnP and PnP-DM, and the
exact posterior p(x | y) for DPS and DiffPIR (which do not claim to sample it).

Columns: max |z| of the sample mean over the 16 coordinates, in Monte-Carlo standard errors (< 4.5 for an
exact sampler with probability > 0.999); tr Ĉ / tr C; ‖Ĉ − C‖/‖C‖ with its Monte-Carlo floor; and the
distance of the sample mean from p(x | y)'s mean as a fraction of the prior-to-posterior shift.
"""
from __future__ import annotations

import argparse
import time

import torch

from invlab.analysis.exact import (DPNP_CHECK, F64, PNP_DM_CHECK, linear_gaussian_problem, moments,
                                   smoothed_posterior, stats)
from invlab.solvers.diffpir import DiffPIR
from invlab.solvers.diffusion_steps import denoising_sampler
from invlab.solvers.dolph import DOLPH
from invlab.solvers.dpnp import DPnP
from invlab.solvers.dps import DPS
from invlab.solvers.pnp_dm import PnPDM


def row(name: str, target: str, nfe: int, x: torch.Tensor, mean, cov, p, seconds: float) -> str:
    """One table row; the last statistic only where the target is a posterior given this y."""
    zmax, trace, rel, floor = stats(x, mean, cov)
    m, _ = moments(x)
    to_post = f"{float((m - p.post_mean).norm()) / p.shift:.2f}" if "posterior" in target or "y" in target else "—"
    return (f"| {name} | {target} | {nfe} | {zmax:.2f} | {trace:.3f} | {rel:.3f} ({floor:.3f}) | {to_post} | "
            f"{seconds:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="parallel chains per sampler (denoising sampler: 4×)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    p = linear_gaussian_problem(torch.Generator().manual_seed(0), torch.Generator().manual_seed(3))
    shape, n = tuple(p.gp.shape), args.n
    ys = p.y.expand(n, -1).contiguous()
    print("| sampler | target | NFE | max\\|z\\| of the mean | tr Ĉ / tr C | ‖Ĉ − C‖/‖C‖ (MC floor) | "
          "‖mean − E[x\\|y]‖ / shift | seconds |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")

    # the denoising diffusion sampler: p(x0 | x0 + η w), η = 0.1 in image units, 200 levels
    g = torch.Generator().manual_seed(1)
    eta = 0.1
    noisy = p.gp.sample(1, g, dtype=F64) + eta * torch.randn((1, *shape), generator=g, dtype=F64)
    post = p.gp.posterior(torch.eye(noisy.numel(), dtype=F64), noisy.reshape(1, -1), eta)
    for kind in ("ddpm", "ddim"):
        v = p.prior.to_model(noisy).expand(4 * n, *shape).contiguous()
        t0 = time.perf_counter()
        z = denoising_sampler(p.prior, v, 2 * eta, steps=200, kind=kind, generator=torch.Generator().manual_seed(2))
        print(row(f"denoising sampler ({kind}, 200 levels)", "p(x₀ \\| x₀ + ηw)", 200, p.prior.from_model(z),
                  post.mean[0], post.cov[0], p, time.perf_counter() - t0))

    runs = [("DDPM (DOLPH γ = 0), 1,000 steps", "prior", DOLPH(gamma=0.0, clip=False),
             (p.gp.mean.reshape(-1), p.gp.cov)),
            ("DPnP-DDIM (η 0.4 → 0.05, 60 at η_min)", "smoothed posterior", DPnP(denoiser_sampler="ddim", **DPNP_CHECK),
             smoothed_posterior(p, DPNP_CHECK["eta_min"])),
            ("DPnP-DDPM (η 0.4 → 0.05, 60 at η_min)", "smoothed posterior", DPnP(denoiser_sampler="ddpm", **DPNP_CHECK),
             smoothed_posterior(p, DPNP_CHECK["eta_min"])),
            ("PnP-DM, exact likelihood step (ρ 1 → 0.05)", "smoothed posterior",
             PnPDM(likelihood_step="exact", **PNP_DM_CHECK), smoothed_posterior(p, PNP_DM_CHECK["rho_min"])),
            ("PnP-DM, Langevin likelihood step", "smoothed posterior",
             PnPDM(likelihood_step="langevin", **PNP_DM_CHECK), smoothed_posterior(p, PNP_DM_CHECK["rho_min"])),
            ("DPS, 200 steps, ζ' = 0.3", "p(x \\| y)", DPS(steps=200, zeta=0.3, clip=False),
             (p.post_mean, p.post_cov)),
            ("DPS, 1,000 steps, ζ' = 0.3", "p(x \\| y)", DPS(steps=1000, zeta=0.3, clip=False),
             (p.post_mean, p.post_cov)),
            ("DiffPIR, 100 steps, λ = 1, ζ = 0.1", "p(x \\| y)", DiffPIR(clip=False), (p.post_mean, p.post_cov))]
    for name, target, solver, (mean, cov) in runs:
        res = solver(ys, p.A, p.prior, generator=torch.Generator().manual_seed(5))
        print(row(name, target, res.nfe, res.x, mean, cov, p, res.seconds))


if __name__ == "__main__":
    main()
