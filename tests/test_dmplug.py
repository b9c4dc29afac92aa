"""DMPlug (invlab/solvers/dmplug.py), its ES-WMV early stop (invlab/solvers/early_stop.py) and the engine's
oracle record (`track_best`: psnr_best / iter_best) and per-sample solver columns (iter_stop).

What is checked against what:
- ES-WMV on synthetic trajectories: a walk whose step length shrinks to a minimum and grows again has its
  minimum windowed variance where the window is centred on the shortest steps (known in closed form), and on
  random walks the stop iteration and returned iterate equal a plain numpy re-implementation of the rule.
- R(z): a hand-written diffusers-style DDIM loop (timesteps 666/333/0, ᾱ' = 1 at the end, clipped x̂0 and ε̂
  recomputed from it) and the repo's unconditional `ddim_sample` from the same seed give the same image.
- DMPlug on an exact Gaussian diffusion prior (invlab/analysis/exact.py) and a dense linear A drives the data
  residual down by orders of magnitude; NFE = ddim_steps per iteration. With ES-WMV on, each sample's stop and
  returned iterate are those the plain re-implementation finds on the iterates the callback saw.
- Refusals: a prior without gradients, a prior that is not a diffusion model, a bad mode.
- Engine: with a stand-in solver whose iterates are known, psnr_best / iter_best equal a max computed here.
"""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from invlab.errors import ConfigError
from invlab.priors.diffusion import DiffusionPrior, from_model
from invlab.priors.gaussian import GaussianPrior
from invlab.priors.schedule import DDPMSchedule, ddim_sample
from invlab.solvers.dmplug import DMPlug, ddim_decode
from invlab.solvers.early_stop import WindowedVarianceStop

from helpers_engine import TinySolver
from invlab.analysis.exact import GaussianEps, MatrixOp

F64 = torch.float64
SHAPE, D, M, SIGMA_Y = (1, 4, 4), 16, 8, 0.01


# ---- ES-WMV ------------------------------------------------------------------------------------------------

def reference_es_wmv(xs: np.ndarray, window: int, patience: int):
    """The rule written out for one trajectory xs (K, d): (index of the returned iterate, stop iteration or None)."""
    best, best_t, wait = math.inf, None, 0
    for t in range(window - 1, len(xs)):
        win = xs[t - window + 1:t + 1]
        var = float(((win - win.mean(0)) ** 2).mean())
        if var < best:
            best, best_t, wait = var, t, 0
        else:
            wait += 1
            if wait >= patience:
                return best_t, t
    return (best_t if best_t is not None else len(xs) - 1), None


def walk(steps: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Positions x_k = Σ_{j≤k} steps_j · direction, (K, d)."""
    return np.cumsum(steps)[:, None] * direction[None, :]


def test_es_wmv_stops_at_the_valley_of_a_converge_then_diverge_walk():
    # step lengths |j − c| + 0.5: the window of W = 4 iterates (3 steps j = t−2..t) is tightest when it is
    # centred on j = c, i.e. t* = c + 1; the rule stops P iterations after that.
    K, W, P = 120, 4, 10
    centres = (40, 25)
    d = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.6, 0.8, 0.0]])
    xs = np.stack([walk(np.abs(np.arange(K) - c) + 0.5, d[b]) for b, c in enumerate(centres)], 1)  # (K, B, 4)
    stop = WindowedVarianceStop(W, P)
    stopped_at = [None, None]
    for k in range(K):
        xk = torch.tensor(xs[k]).reshape(2, 1, 2, 2)
        if stopped_at[1] is not None:
            xk[1] = 1e6     # rows of a stopped sample are ignored from then on
        mask = stop.update(k, xk)
        for b in range(2):
            if bool(mask[b]) and stopped_at[b] is None:
                stopped_at[b] = k
    assert stopped_at == [centres[0] + 1 + P, centres[1] + 1 + P]
    assert stop.best_iter.tolist() == [c + 1 for c in centres]
    assert stop.answer_iter(K - 1).tolist() == [c + 1 for c in centres]
    out = stop.result().reshape(2, -1).numpy()
    for b, c in enumerate(centres):
        np.testing.assert_allclose(out[b], xs[c + 1, b])
        assert reference_es_wmv(xs[:, b], W, P) == (c + 1, c + 1 + P)


def test_es_wmv_matches_a_plain_reimplementation_on_random_walks():
    rng = np.random.default_rng(0)
    K, B, W, P = 200, 5, 7, 15
    scale = np.exp(np.sin(np.linspace(0, 3 * np.pi, K))[:, None] + 0.3 * rng.standard_normal((K, B)))
    xs = np.cumsum(scale[:, :, None] * rng.standard_normal((K, B, 9)), axis=0)  # (K, B, 9)
    stop = WindowedVarianceStop(W, P)
    first_stop = [None] * B
    for k in range(K):
        mask = stop.update(k, torch.tensor(xs[k], dtype=torch.float32).reshape(B, 1, 3, 3))
        for b in range(B):
            if bool(mask[b]) and first_stop[b] is None:
                first_stop[b] = k
    out = stop.result().reshape(B, -1).numpy()
    for b in range(B):
        t_star, t_stop = reference_es_wmv(xs[:, b], W, P)
        assert stop.answer_iter(K - 1)[b] == t_star and first_stop[b] == t_stop
        np.testing.assert_allclose(out[b], xs[t_star, b], rtol=1e-6)
    assert any(s is not None for s in first_stop)


def test_es_wmv_without_a_full_window_returns_the_last_iterate():
    stop = WindowedVarianceStop(10, 5)
    for k in range(4):
        stop.update(k, torch.full((2, 1, 2, 2), float(k)))
    assert torch.equal(stop.result(), torch.full((2, 1, 2, 2), 3.0))
    assert stop.answer_iter(3).tolist() == [3, 3] and not bool(stop.stopped.any())
    with pytest.raises(ConfigError, match="window"):
        WindowedVarianceStop(1, 5)


def test_es_wmv_needs_a_strictly_new_minimum():
    # x_k = (−1)^k v with an even window: VAR is exactly |v|² at every t, never a new minimum after the first
    W, P = 4, 6
    stop = WindowedVarianceStop(W, P)
    for k in range(W - 1 + P + 1):
        stop.update(k, torch.full((1, 1, 2, 2), (-1.0) ** k))
    assert stop.stop_iter.tolist() == [W - 1 + P] and stop.best_iter.tolist() == [W - 1]
    assert torch.equal(stop.result(), torch.full((1, 1, 2, 2), (-1.0) ** (W - 1)))


# ---- R(z) --------------------------------------------------------------------------------------------------

def tiny_unet_prior():
    from invlab.nets.unet import UNet

    torch.manual_seed(0)
    net = UNet(in_channels=1, channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_levels=[1], heads=2,
               groups=4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # untrained, the output layer is zero (ε̂ = 0); random weights make ε̂ matter
        for p in net.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return DiffusionPrior(net=net, image_size=(8, 8))


def diffusers_ddim(eps_fn, z: torch.Tensor, n: int) -> torch.Tensor:
    """DMPlug's loop as written with diffusers' DDIMScheduler (T = 1000, linear β 1e-4→0.02, set_timesteps(n),
    clip_sample, set_alpha_to_one, use_clipped_model_output, η = 0), then the output clamp."""
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    ab = np.cumprod(1.0 - betas)
    ratio = 1000 // n
    x = z
    for t in (np.arange(n) * ratio)[::-1]:
        prev = t - ratio
        a, a_prev = ab[t], (ab[prev] if prev >= 0 else 1.0)
        eps = eps_fn(x, torch.full((x.shape[0],), float(t), dtype=F64))
        x0 = ((x - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-1, 1)
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    return x.clamp(-1, 1)


def test_r_of_z_is_the_few_step_ddim_of_the_reference_code():
    prior = tiny_unet_prior()
    z = 1.5 * torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    seq = prior.schedule.timesteps(3).tolist()
    assert seq == [0, 333, 666]
    with torch.no_grad():
        mine = ddim_decode(prior, z, seq)
        ref = diffusers_ddim(prior.net, z, 3)
        raw = ddim_decode(prior, z, seq, clip_x0=False)
    torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(raw, mine, atol=1e-3)  # the random net's x̂0 leaves [-1, 1]: clipping was tested
    # the repo's unconditional sampler from the same seed: R(z0) is a deterministic DDIM sample
    g = torch.Generator().manual_seed(5)
    z0 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        sample = ddim_sample(prior.net, prior.schedule, (2, 1, 8, 8), steps=3, generator=g)
        torch.testing.assert_close(ddim_decode(prior, z0, seq), sample.clamp(-1, 1), rtol=1e-5, atol=1e-5)


# ---- DMPlug on an exact Gaussian prior --------------------------------------------------------------------

@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    root = torch.randn(D, D, generator=g, dtype=F64)
    cov = 0.02 * root @ root.T / D + 0.005 * torch.eye(D, dtype=F64)
    gp = GaussianPrior((0.5 + 0.1 * torch.randn(D, generator=g, dtype=F64)).reshape(SHAPE), cov)
    sched = DDPMSchedule()
    prior = DiffusionPrior(net=GaussianEps(gp, sched), schedule=sched, image_size=SHAPE[1:])
    A = MatrixOp(torch.randn(M, D, generator=g, dtype=F64) / math.sqrt(D), SHAPE, SIGMA_Y)
    x = gp.sample(3, g, dtype=F64)
    y = A(x) + SIGMA_Y * torch.randn(3, M, generator=g, dtype=F64)
    return gp, prior, A, x, y


def test_dmplug_fits_the_measurements_through_the_exact_prior(problem):
    _, prior, A, x, y = problem
    seen = []
    res = DMPlug(iters=200, lr=0.05, mode="none")(y, A, prior, generator=torch.Generator().manual_seed(0),
                                                  callback=lambda k, xk, info: seen.append(xk.clone()))
    loss = res.trace["loss"]
    assert res.nfe == 3 * 200 and res.x.shape == x.shape and len(seen) == 200
    z0 = torch.randn((3, *SHAPE), generator=torch.Generator().manual_seed(0), dtype=F64)
    with torch.no_grad():   # the first iterate is R(z0) with z0 from the caller's generator
        torch.testing.assert_close(seen[0], from_model(ddim_decode(prior, z0, [0, 333, 666])))
    first = float(((y - A(seen[0])) ** 2).mean())
    assert loss[0] == pytest.approx(first, rel=1e-9)
    assert loss[-1] < 1e-2 * loss[0]              # the data misfit falls by > 100× (to ≈ σ_y², measured 3.5e-3×)
    assert float(((y - A(res.x)) ** 2).mean()) < 1e-2 * first


class SwitchingOp(MatrixOp):
    """A dense operator whose matrix changes after `switch_at` calls: the fit settles on one solution, then
    moves to another, so the iterates' windowed variance has a valley, as when an optimisation starts
    fitting noise (a smooth convergent fit alone never stops ES-WMV: its variance keeps falling)."""

    def __init__(self, first, second, switch_at: int):
        super().__init__(first, SHAPE, SIGMA_Y)
        self.second, self.switch_at, self.calls = second, switch_at, 0

    def forward(self, x):
        self.calls += 1
        return x.flatten(1) @ (self.matrix if self.calls <= self.switch_at else self.second).T


def test_dmplug_es_wmv_stops_each_sample_as_the_rule_says(problem):
    _, prior, A, _, y = problem
    g = torch.Generator().manual_seed(7)
    op = SwitchingOp(A.matrix, torch.randn(M, D, generator=g, dtype=F64) / math.sqrt(D), switch_at=60)
    W, P, K = 5, 15, 300
    seen = []
    res = DMPlug(iters=K, lr=0.05, window=W, patience=P)(y, op, prior, generator=torch.Generator().manual_seed(0),
                                                         callback=lambda k, xk, info: seen.append(xk.clone()))
    traj = torch.stack(seen).reshape(len(seen), 3, -1).numpy()      # what the callback saw, (iterations, B, d)
    stop, ran = res.per_sample["iter_stop"].long(), res.per_sample["iter_run"].long()
    for b in range(3):
        t_star, t_stop = reference_es_wmv(traj[:, b], W, P)
        assert t_stop is not None and 60 <= t_star < 60 + W   # the valley: just before the switch moves the fit
        assert (int(stop[b]), int(ran[b])) == (t_star, t_stop + 1)
        np.testing.assert_allclose(res.x[b].reshape(-1).numpy(), traj[t_star, b])
        np.testing.assert_allclose(traj[t_stop:, b], np.broadcast_to(traj[t_star, b], traj[t_stop:, b].shape))
    assert len(seen) == int(ran.max()) < K and res.nfe == 3 * len(seen)   # the batch ends when all have stopped


def test_dmplug_refuses_priors_it_cannot_use(problem):
    gp, prior, A, _, y = problem
    flat = DiffusionPrior(net=prior.net, schedule=prior.schedule)
    flat.differentiable = False                     # e.g. a wrapped FFDNet-like network without gradients
    with pytest.raises(ConfigError, match="dmplug needs gradients through the prior") as err:
        DMPlug(iters=2)(y, A, flat)
    assert "\n" not in str(err.value) and str(err.value).endswith(".")
    with pytest.raises(ConfigError, match="needs a diffusion prior"):
        DMPlug(iters=2)(y, A, gp)
    with pytest.raises(ConfigError, match="mode"):
        DMPlug(iters=2, mode="best")(y, A, prior)


# ---- engine: oracle record and per-sample solver columns ------------------------------------------------

class PeakingSolver(TinySolver):
    """Iterates x_k = y − 0.05·|k − (i + 1)| for the sample with dataset index i, so the error is smallest at
    k = i + 1. Returns the last iterate and reports iter_stop = i + 0.5."""

    def solve(self, y, A, prior, *, x_init, generator, trace):
        peak = torch.tensor([i + 1.0 for i in A.indices]).view(-1, 1, 1, 1)
        for k in range(self.iters):
            x = y - 0.05 * (k - peak).abs()
            trace(k, x)
        trace.per_sample["iter_stop"] = peak.flatten() - 0.5
        return x


@pytest.mark.filterwarnings("ignore")
def test_engine_records_the_best_psnr_over_the_iterates(tmp_path):
    from torchmetrics.functional.image import peak_signal_noise_ratio

    from helpers_engine import TinyDenoiseTask, TinyImages, compose
    from invlab.cli.run import experiment

    run_dir = tmp_path / "run"
    experiment(compose(tmp_path / "conf", run_dir, "solver._target_=test_dmplug.PeakingSolver",
                       "solver.iters=7", "track_best=true", "logger=none"))
    with open(run_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    x = torch.stack([TinyImages()[i]["x"] for i in range(4)])
    _, y = TinyDenoiseTask(0.1).measure(x, list(range(4)), seed=0)
    psnrs = torch.stack([peak_signal_noise_ratio((y[i] - 0.05 * abs(k - (i + 1))).clamp(0, 1), x[i], data_range=1.0)
        for k in range(7) for i in range(4)]).reshape(7, 4)        # (iteration, sample)
    assert psnrs.argmax(0).tolist() == [1, 2, 3, 4]
    assert [int(r["index"]) for r in rows] == [0, 1, 2, 3]
    for r in rows:
        i = int(r["index"])
        assert float(r["psnr_best"]) == pytest.approx(float(psnrs[:, i].max()), abs=1e-4)
        assert int(r["iter_best"]) == i + 1
        assert float(r["psnr"]) == pytest.approx(float(psnrs[-1, i]), abs=1e-4)   # the returned (last) iterate
        assert float(r["psnr"]) < float(r["psnr_best"]) - 0.5
        assert float(r["iter_stop"]) == i + 0.5


def test_config_selects_the_mnist_diffusion_prior_and_builds():
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from invlab.utils.config import build

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["solver=dmplug", "task=deblur_nonlinear"])
        other = compose("config", overrides=["solver=dmplug", "task=deblur"])
    assert cfg.prior.name == "ddpm_mnist" and cfg.data.name == "mnist_test8" and cfg.track_best is False
    solver = build(cfg.solver)
    assert isinstance(solver, DMPlug) and solver.name == "dmplug" and solver.mode == "es_wmv"
    assert (solver.lr, solver.ddim_steps) == (0.1, 3)        # conf/tuned/dmplug_deblur_nonlinear.yaml
    assert build(other.solver).lr == 0.01                    # the repo's lr elsewhere


def test_dmplug_loss_is_the_operators_data_term(problem):
    """The loss is 2·data_fidelity/m: the MSE for a Gaussian data term (above) and, for 1-bit quantised sensing,
    the negative log-likelihood per measurement, which the fit then lowers (a logit-vs-bit MSE would not be it)."""
    from invlab.ops.quantize import OneBitQuantized

    _, prior, _, x, _ = problem
    A = OneBitQuantized(SHAPE).to(F64)
    g = torch.Generator().manual_seed(4)
    y = torch.where(torch.rand(x.shape, generator=g, dtype=F64) < torch.sigmoid(A(x)), 1.0, -1.0)
    res = DMPlug(iters=100, lr=0.05, mode="none")(y, A, prior, generator=torch.Generator().manual_seed(0))
    nll = lambda u: (A.data_fidelity(u, y) / x[0].numel()).tolist()  # noqa: E731
    assert res.trace["loss"][-1] == pytest.approx(sum(2 * v for v in nll(res.x)) / 3, rel=1e-6)
    assert res.trace["loss"][-1] < 0.9 * res.trace["loss"][0]
