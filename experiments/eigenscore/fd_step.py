"""Finite-difference step vs accuracy of the posterior-covariance eigenvalues on a learned denoiser.

    python experiments/eigenscore/fd_step.py dncnn_mnist04

For two MNIST test digits at each σ: the top-3 eigenvalues of σ²·sym(J), J the exact (autograd) Jacobian
of the float32 denoiser, against the subspace iteration with central differences of length ε = r·σ for
r from 1.4 (the former default 0.05·σ·√784) down to 0.001. 200 iterations (tol 1e-7), so what is left
beside the step is the iteration's own error (the learned J is not symmetric; its top crowds at σ²).
"""
import sys

import torch

from invlab.analysis.jacobian import posterior_cov_eigs
from invlab.data.datasets import mnist
from invlab.priors.learned import LearnedDenoiser

torch.set_num_threads(1)
prior = LearnedDenoiser(sys.argv[1] if len(sys.argv) > 1 else "dncnn_mnist04").eval()
ds = mnist(split="test", size=28, limit=10)
x0 = torch.stack([torch.as_tensor(ds[i]["x"]) for i in (0, 5)]).float()
d = x0[0].numel()
for sigma in (0.05, 0.1, 0.19):
    x = x0 + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    s = torch.full((1,), sigma)
    exact, asym = [], []
    for z in x:
        J = torch.autograd.functional.jacobian(lambda u: prior.denoise(u[None], s)[0].reshape(-1), z,
                                               vectorize=True).reshape(d, d).double()
        exact.append(torch.linalg.eigvalsh(0.5 * (J + J.T)).flip(-1)[:3] * sigma**2)
        asym.append(float((J - J.T).norm() / J.norm()))
    exact = torch.stack(exact)
    print(f"σ={sigma}: exact top-3 of σ²·sym(J) {exact.numpy().round(6).tolist()}, ‖J−Jᵀ‖/‖J‖ "
          f"{[round(a, 2) for a in asym]}")
    for r in (1.4, 0.3, 0.1, 0.05, 0.02, 0.005, 0.001):
        eig = posterior_cov_eigs(prior, x, sigma, k=3, oversample=1, max_iters=200, tol=1e-7, patience=2,
                                 rel_step=r, generator=torch.Generator().manual_seed(0))
        err = ((eig.values - exact) / exact).abs().amax(0)
        print(f"  ε/σ={r:<6g} max relative error per eigenvalue {[f'{e:.1e}' for e in err.tolist()]}", flush=True)
