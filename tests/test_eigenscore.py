"""EigenScore's subspace iteration against closed forms, the baselines against exact values, the detector's
standardisation, and AUROC against scikit-learn.

Tolerances (float64 throughout):
- Gaussian prior: the Wiener denoiser is affine, so a central difference has NO truncation error; what
  is left is rounding (u·‖D‖/ε ≈ 1e-13 relative) and stopping the iteration (tol 1e-12 on the eigenvalue
  change, Ritz values converging like (λ4/λj)^(2m)), so the top eigenvalues must match (Σ⁻¹ + I/σ²)⁻¹'s
  to rtol 1e-8.
- Gaussian mixture (nonlinear denoiser): the central difference has truncation error c·ε², ε the step;
  against the exact autograd Jacobian the error must shrink ~100× per 10× smaller step (between 30× and
  300× is asserted). At the shipped detector settings (conf/detector/eigenscore.yaml: the automatic step
  ε = ∛u·σ, 30 iterations, tol 3e-3), every one of the top 3 eigenvalues at points between two modes must
  be within 1% of the exact Jacobian's (measured: ≤ 2.6e-3 in float32, ≤ 7.7e-4 in float64); the former
  step ε = 0.05·σ·√d was off by 54× on the leading one there.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from invlab.analysis.auroc import auroc, fpr_at_tpr
from invlab.analysis.baselines import DenoisingError, JacobianNorm, PosteriorTrace, ScoreNorm
from invlab.analysis.eigenscore import EigenScore
from invlab.analysis.jacobian import jvp, posterior_cov_eigs
from invlab.errors import ConfigError
from invlab.priors.gaussian import GaussianMixturePrior, GaussianPrior

F64 = torch.float64
SHAPE = (1, 4, 4)
D = 16
# An affine (Wiener) denoiser has no truncation error, so a long step only cuts rounding: the automatic
# float64 step (6e-6·σ) leaves ~1e-9 relative rounding noise, above the 1e-12 stopping tolerances below.
AFFINE_STEP = 1.0


def spectral_cov(g, scale: float, ratio: float = 0.6, d: int = D) -> torch.Tensor:
    """Q diag(scale·(ratio^i + 0.02)) Qᵀ, Q a random rotation: a known spectrum, well separated at the
    top and well conditioned (so that Σ⁻¹ in the reference formula is accurate)."""
    Q, _ = torch.linalg.qr(torch.randn(d, d, dtype=F64, generator=g))
    return Q @ torch.diag(scale * (ratio ** torch.arange(d, dtype=F64) + 0.02)) @ Q.T


def two_modes(g) -> GaussianMixturePrior:
    means = torch.stack([torch.full((D,), 0.4, dtype=F64), torch.full((D,), 0.6, dtype=F64)])
    return GaussianMixturePrior([0.5, 0.5], means, torch.stack([spectral_cov(g, 0.02), spectral_cov(g, 0.02)]), SHAPE)


@pytest.mark.parametrize("sigma", [0.05, 0.2])
def test_gaussian_posterior_covariance_eigenvalues_are_exact(sigma):
    g = torch.Generator().manual_seed(0)
    d = 64
    cov = spectral_cov(g, 0.05, 0.5, d)
    prior = GaussianPrior(torch.full((d,), 0.5, dtype=F64), cov, (1, 8, 8))
    x = prior.sample(3, g, dtype=F64) + sigma * torch.randn(3, 1, 8, 8, dtype=F64, generator=g)
    post = np.linalg.inv(np.linalg.inv(cov.numpy()) + np.eye(d) / sigma**2)   # (Σ⁻¹ + I/σ²)⁻¹
    exact = np.sort(np.linalg.eigvalsh(post))[::-1][:3]
    for oversample in (0, 2):
        eig = posterior_cov_eigs(prior, x, sigma, k=3, oversample=oversample, max_iters=400, tol=1e-12,
                                 patience=2, rel_step=AFFINE_STEP, generator=g)
        assert eig.converged.all()
        np.testing.assert_allclose(eig.values.numpy(), np.broadcast_to(exact, (3, 3)), rtol=1e-8)
    # stopped early: every Ritz value lies within its residual of SOME eigenvalue (not necessarily the
    # j-th: an unconverged subspace may still miss a top eigenvector)
    rough = posterior_cov_eigs(prior, x, sigma, k=3, max_iters=6, tol=1e-12, rel_step=AFFINE_STEP, generator=g)
    spectrum = np.linalg.eigvalsh(post)
    gap = np.abs(rough.values.numpy()[..., None] - spectrum).min(-1) / rough.values.numpy()[:, :1]
    assert not rough.converged.any() and (gap.max(1) <= rough.residual.numpy() + 1e-12).all()
    assert np.abs(rough.values.numpy() - exact).max() / exact[0] > 1e-3    # (the early stop is inexact)
    # the Ritz vectors span the top eigenvectors: ‖(I − P) V‖ small
    evecs = np.linalg.eigh(post)[1][:, ::-1][:, :3]
    resid = eig.vectors.numpy() - evecs @ (evecs.T @ eig.vectors.numpy())
    assert np.abs(resid).max() < 1e-5


def test_per_sample_sigmas_and_gmm_finite_difference_error_is_second_order():
    g = torch.Generator().manual_seed(1)
    gmm = two_modes(g)
    sigma = torch.tensor([0.1, 0.1, 0.15], dtype=F64)
    x = (0.5 + 0.05 * torch.randn(3, D, dtype=F64, generator=g)).reshape(3, *SHAPE)   # between the modes
    J = torch.func.vmap(lambda z, s: torch.func.jacrev(lambda u: gmm.denoise(u[None], s[None])[0])(z))(x, sigma)
    J = J.reshape(3, D, D)
    assert (J - J.transpose(1, 2)).abs().max() < 1e-12          # an exact MMSE Jacobian is symmetric
    exact = torch.linalg.eigvalsh(J).flip(-1)[:, :3] * sigma[:, None] ** 2
    errors = []
    for step in (1e-2, 1e-3):
        eig = posterior_cov_eigs(gmm, x, sigma, k=3, max_iters=300, tol=1e-11, patience=2, rel_step=step,
                                 generator=torch.Generator().manual_seed(0))
        assert eig.converged.all()
        errors.append(float(((eig.values - exact) / exact).abs().max()))
    assert errors[1] < 2e-4
    assert 30 < errors[0] / errors[1] < 300


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_default_settings_are_within_one_percent_on_a_two_mode_mixture(dtype):
    """The shipped EigenScore config (σ = 0.05 here) on an exact mixture whose posterior is bimodal at the
    test points: each of λ1..λ3 of every draw against the eigenvalues of the exact (autograd) Jacobian."""
    from pathlib import Path

    from omegaconf import OmegaConf

    d, shape, sigma = 64, (1, 8, 8), 0.05
    g = torch.Generator().manual_seed(1)
    means = torch.stack([torch.full((d,), 0.4, dtype=F64), torch.full((d,), 0.6, dtype=F64)])
    covs = torch.stack([spectral_cov(g, 0.005, 0.5, d), spectral_cov(g, 0.005, 0.5, d)])
    gmm = GaussianMixturePrior([0.5, 0.5], means, covs, shape)
    x = (0.5 + 0.02 * torch.randn(6, *shape, dtype=F64, generator=g)).to(dtype)     # between the modes
    cfg = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "conf/detector/eigenscore.yaml"))
    assert cfg.pop("_target_") == "invlab.analysis.eigenscore.EigenScore" and cfg.pop("name") == "eigenscore"
    det = EigenScore(**{**cfg, "sigmas": [sigma]})
    lam, ok = det.eigenvalues(gmm, x, 0, list(range(6)))
    xt = det.noisy(x, sigma, det.generators(0, list(range(6)))).to(F64)          # the same noisy points
    s = torch.tensor([sigma], dtype=F64)
    J = torch.stack([torch.func.jacrev(lambda u: gmm.denoise(u[None], s)[0].reshape(-1))(z).reshape(d, d)
                     for z in xt])
    exact = (torch.linalg.eigvalsh(J).flip(-1)[:, :3] * sigma**2).reshape(lam.shape)
    assert ok.all()
    assert float(((lam - exact) / exact).abs().max()) < 0.01
    old = posterior_cov_eigs(gmm, xt.to(dtype), sigma, k=3, oversample=1, max_iters=30, tol=3e-3, patience=2,
                             rel_step=0.05 * d**0.5, generator=torch.Generator().manual_seed(0))
    assert float(((old.values[:, 0] - exact.reshape(-1, 3)[:, 0]) / exact.reshape(-1, 3)[:, 0]).abs().max()) > 1


def test_jvp_matches_autograd_on_an_affine_denoiser():
    g = torch.Generator().manual_seed(2)
    prior = GaussianPrior(torch.full((D,), 0.5, dtype=F64), spectral_cov(g, 0.03), SHAPE)
    x = torch.rand(2, *SHAPE, dtype=F64, generator=g)
    V = torch.randn(2, D, 5, dtype=F64, generator=g) * 3.0    # any norms
    sigma = torch.tensor([0.1, 0.3], dtype=F64)
    K = [prior.cov @ torch.linalg.inv(prior.cov + s**2 * torch.eye(D, dtype=F64)) for s in sigma]
    np.testing.assert_allclose(jvp(prior, x, sigma, V, AFFINE_STEP).numpy(), torch.stack([K[0] @ V[0], K[1] @ V[1]]).numpy(),
                               rtol=1e-9, atol=1e-12)


def test_eigenscore_features_on_a_gaussian_are_the_exact_eigensum_and_batch_independent():
    g = torch.Generator().manual_seed(3)
    cov = spectral_cov(g, 0.03)
    prior = GaussianPrior(torch.full((D,), 0.5, dtype=F64), cov, SHAPE)
    det = EigenScore(sigmas=[0.05, 0.1], k=2, reps=2, max_iters=300, tol=1e-12, patience=2, fd_step=AFFINE_STEP)
    x = prior.sample(4, g, dtype=F64)
    feats = det.features(prior, x, [0, 1, 2, 3])
    for j, s in enumerate(det.sigmas):
        post = np.linalg.eigvalsh(np.linalg.inv(np.linalg.inv(cov.numpy()) + np.eye(D) / s**2))
        np.testing.assert_allclose(feats[:, j].numpy(), np.sort(post)[-2:].sum(), rtol=1e-8)
    assert det.feature_names == ["eigsum@0.05", "eigsum@0.1"] and det.stats["converged"] == det.stats["runs"]
    one_by_one = torch.cat([det.features(prior, x[i:i + 1], [i]) for i in range(4)])
    np.testing.assert_allclose(one_by_one.numpy(), feats.numpy(), rtol=1e-10)
    all_eigs = EigenScore(sigmas=[0.05], k=2, reps=1, aggregate="all", max_iters=300, tol=1e-12,
                          fd_step=AFFINE_STEP)
    assert all_eigs.features(prior, x, [0, 1, 2, 3]).shape == (4, 2)


def test_eigenscore_flags_points_between_the_modes_of_a_mixture():
    """OOD inputs (between the two modes) have a larger posterior covariance than samples of the prior."""
    g = torch.Generator().manual_seed(4)
    gmm = two_modes(g)
    fit, test_id = gmm.sample(24, g, dtype=F64), gmm.sample(24, g, dtype=F64)
    ood = (0.5 + 0.04 * torch.randn(24, D, dtype=F64, generator=g)).reshape(24, *SHAPE)
    result = {}
    for det in (EigenScore(sigmas=[0.02, 0.04], k=2, reps=2, max_iters=100, tol=1e-6),
                PosteriorTrace(sigmas=[0.02, 0.04], probes=4, reps=1)):
        det.fit(det.features(gmm, fit, range(24)))
        s_id = det.score(det.features(gmm, test_id, range(100, 124)))
        s_ood = det.score(det.features(gmm, ood, range(200, 224)))
        result[det.name] = auroc(s_id, s_ood)
    # the top eigenvalues see the one direction of between-mode uncertainty that the trace dilutes
    # over all d directions (the paper's argument for eigenvalues over the trace)
    assert result["eigenscore"] > 0.9 and result["eigenscore"] > result["posterior_trace"]


def test_baselines_equal_their_closed_forms_on_a_diagonal_gaussian():
    g = torch.Generator().manual_seed(5)
    lam = 0.01 + 0.04 * torch.rand(D, dtype=F64, generator=g)
    mu = torch.full((D,), 0.5, dtype=F64)
    prior = GaussianPrior(mu, torch.diag(lam), SHAPE)
    x = torch.rand(3, *SHAPE, dtype=F64, generator=g)
    sigmas = [0.05, 0.2]
    # exact score of p_σ at the clean image; denoising error with the detector's own noise draws
    sn = ScoreNorm(sigmas).features(prior, x, [0, 1, 2])
    de_det = DenoisingError(sigmas, reps=2)
    de = de_det.features(prior, x, [0, 1, 2])
    for j, s in enumerate(sigmas):
        score = -(x.reshape(3, D) - mu) / (lam + s**2)
        np.testing.assert_allclose(sn[:, j].numpy(), score.norm(dim=1).numpy(), rtol=1e-10)
        xt = de_det.noisy(x, s, de_det.generators(j, [0, 1, 2]))
        den = mu + lam / (lam + s**2) * (xt.reshape(6, D) - mu)
        err = (den - x.repeat_interleave(2, 0).reshape(6, D)).pow(2).sum(1).reshape(3, 2).mean(1)
        np.testing.assert_allclose(de[:, j].numpy(), err.numpy(), rtol=1e-10)
    # Rademacher probes are exact for a diagonal Jacobian: zᵀJz = tr J and ‖Jz‖² = ‖J‖_F²
    tr = PosteriorTrace(sigmas, probes=3, reps=2).features(prior, x, [0, 1, 2])
    fro = JacobianNorm(sigmas, probes=3, reps=2).features(prior, x, [0, 1, 2])
    for j, s in enumerate(sigmas):
        post = s**2 * lam / (lam + s**2)                         # eigenvalues of σ²J
        np.testing.assert_allclose(tr[:, j].numpy(), float(post.sum()), rtol=1e-9)
        np.testing.assert_allclose(fro[:, j].numpy(), float(post.norm()), rtol=1e-9)


def test_standardisation_and_score():
    det = ScoreNorm([0.1, 0.2])
    with pytest.raises(ConfigError):
        det.score(torch.ones(2, 2))
    train = torch.tensor([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]], dtype=F64)   # second feature constant
    det.fit(train)
    z = det.standardized(torch.tensor([[2.0, 7.0], [4.0, 5.0]], dtype=F64))
    np.testing.assert_allclose(z.numpy(), [[0.0, 2.0], [2.0 / np.sqrt(2 / 3), 0.0]])
    np.testing.assert_allclose(det.score(torch.tensor([[4.0, 5.0]])).numpy(), [2.0 / np.sqrt(2 / 3)])
    with pytest.raises(ConfigError):
        EigenScore([0.1], aggregate="max")
    with pytest.raises(ConfigError):
        ScoreNorm([])


def test_auroc_matches_sklearn_also_for_large_scores_and_ties():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(0)
    for offset, scale in ((0.0, 1.0), (1000.0, 100.0), (-50.0, 30.0)):
        a = offset + scale * rng.normal(size=70)
        b = offset + scale * (rng.normal(size=55) + 0.7)
        b[:6] = a[:6]                                           # ties across the classes
        a[10:14] = a[9]                                         # ties within a class
        y, s = np.r_[np.zeros(70), np.ones(55)], np.r_[a, b]
        assert auroc(a, b) == pytest.approx(roc_auc_score(y, s), abs=1e-6)
        fpr, tpr, _ = roc_curve(y, s)
        assert fpr_at_tpr(a, b) == pytest.approx(fpr[tpr >= 0.95].min(), abs=1e-6)
    assert auroc([0, 1, 2], [3, 4]) == 1.0 and auroc([3, 4], [0, 1, 2]) == 0.0
    assert auroc([1.0, 1.0], [1.0]) == 0.5
    with pytest.raises(ConfigError):
        auroc([0.0, float("nan")], [1.0])
