"""The exact 1-D TV prox (Condat's direct algorithm) against an independent long-run Chambolle–Pock solve."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from invlab.errors import ConfigError, ShapeError
from invlab.priors.tv1d import TV1D, noise_sigma, prox_tv1d, tv1d_dual, tv_condition


def chambolle_pock(signals: list[np.ndarray], lams: list[float], iters: int = 40000) -> list[np.ndarray]:
    """argmin_u ½‖u − y‖² + λ‖Du‖₁ for each signal, by Chambolle–Pock (2011, Alg. 1, θ = 1,
    τ = σ = 0.49 < 1/‖D‖ = 1/2): p ← clip(p + σ D ū, ±λ);  u⁺ = (u − τ Dᵀp + τ y)/(1 + τ);  ū = 2u⁺ − u.
    All signals are solved at once as one concatenated signal whose differences across the joins have
    bound 0 (so p = 0 there and the problems decouple)."""
    y = np.concatenate(signals)
    bound = np.concatenate([np.r_[np.full(len(s) - 1, lam), 0.0] for s, lam in zip(signals, lams)])[:-1]
    u, ub, p = y.copy(), y.copy(), np.zeros(len(y) - 1)
    tau = sig = 0.49
    for _ in range(iters):
        p = np.clip(p + sig * np.diff(ub), -bound, bound)
        dtp = np.r_[0.0, p] - np.r_[p, 0.0]
        un = (u - tau * dtp + tau * y) / (1 + tau)
        ub, u = 2 * un - u, un
    return np.split(u, np.cumsum([len(s) for s in signals])[:-1])


LAMS = [0.0, 0.02, 0.1, 0.5, 1.5, 5.0]  # per-sample λ, from "no change" to a few segments


def test_prox_matches_chambolle_pock():
    cases = []
    for length in (2, 3, 17, 128, 300):
        rng = np.random.default_rng(length)
        cases.append(rng.standard_normal((len(LAMS), length)) + 2.0 * (np.arange(length) > length // 3))
    ref = chambolle_pock([row for y in cases for row in y], LAMS * len(cases))
    k = 0
    for y in cases:
        got = prox_tv1d(torch.from_numpy(y)[:, None], torch.tensor(LAMS, dtype=torch.float64))[:, 0].numpy()
        for b in range(len(LAMS)):
            assert np.abs(got[b] - ref[k]).max() < 1e-6, (y.shape, LAMS[b])
            k += 1
        assert np.allclose(got[0], y[0])                      # λ = 0: the input


def test_prox_is_the_mean_exactly_beyond_the_known_threshold():
    """The solution is constant (the mean) iff λ ≥ max_k |Σ_{i≤k} (y_i − ȳ)| (the dual's feasibility)."""
    y = np.random.default_rng(3).standard_normal((1, 1, 40)) + np.linspace(0, 3, 40)
    thr = float(np.abs(np.cumsum(y[0, 0] - y[0, 0].mean())[:-1]).max())
    above = prox_tv1d(torch.from_numpy(y), thr * 1.001)[0, 0].numpy()
    below = prox_tv1d(torch.from_numpy(y), thr * 0.95)[0, 0].numpy()
    assert np.allclose(above, y.mean(), atol=1e-12)
    assert np.ptp(below) > 1e-3


def test_prox_optimality_two_points():
    """Closed form for L = 2: the mean if |y₁ − y₀| ≤ 2λ, else each point moved λ towards the other."""
    y = torch.tensor([[[0.0, 1.0]], [[0.0, 3.0]]], dtype=torch.float64)
    got = prox_tv1d(y, 0.7)
    assert torch.allclose(got[0, 0], torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert torch.allclose(got[1, 0], torch.tensor([0.7, 2.3], dtype=torch.float64))


def test_dual_iterations_converge_to_the_exact_prox():
    y = torch.randn(3, 1, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = prox_tv1d(y, 0.3)
    assert (tv1d_dual(y, 0.3, iters=5000) - exact).abs().max() < 1e-6
    assert (tv1d_dual(y, 0.3, iters=5) - exact).abs().max() > 1e-3  # few iterations are visibly not there


def test_noise_sigma_estimate():
    g = torch.Generator().manual_seed(1)
    y = 0.05 * torch.randn(8, 1, 4096, generator=g)
    assert torch.allclose(noise_sigma(y), torch.full((8,), 0.05), rtol=0.06)


def test_prior_and_condition():
    y = torch.randn(2, 1, 50, generator=torch.Generator().manual_seed(2))
    prior = TV1D(weight=2.0)
    assert torch.allclose(prior.denoise(y, 0.1), prox_tv1d(y, 0.2))
    assert torch.allclose(tv_condition(y, 1.5), prox_tv1d(y, 1.5 * noise_sigma(y)))
    assert torch.allclose(TV1D(weight=2.0, method="iterative", iters=4000).denoise(y, 0.1), prox_tv1d(y, 0.2),
                          atol=1e-4)
    with pytest.raises(ShapeError, match="spectra"):
        prior.denoise(torch.zeros(1, 1, 8, 8), 0.1)
    with pytest.raises(ConfigError, match="method"):
        TV1D(method="fast")
    with pytest.raises(ConfigError, match="λ"):
        prox_tv1d(y, -1.0)
