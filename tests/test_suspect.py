"""`status=suspect`: a finite reconstruction far from its measurement (for the task's noise model) or
saturated is flagged in results.csv and the summary, never reported as plain `ok`.

End to end: an untrained (random-weight) diffusion prior under DPS gives suspect samples; a trained denoiser
under PnP-HQS stays ok. The pieces: the residual ratio against a numpy re-derivation for Gaussian (real and
complex), Poisson and 1-bit noise, and the saturation share.
"""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from helpers_engine import compose

pytestmark = pytest.mark.filterwarnings("ignore")


def run(tmp_path, name, *overrides):
    from invlab.cli.run import experiment

    run_dir = tmp_path / name
    summary = experiment(compose(tmp_path / "conf", run_dir, "data=mnist_test", "data.limit=4", "logger=none",
                                 *overrides))
    with open(run_dir / "results.csv") as f:
        return summary, list(csv.DictReader(f))


@pytest.fixture(scope="module")
def random_ddpm(tmp_path_factory):
    """A small UNet with random weights and the shipped ddpm_mnist card's schedule: an untrained prior."""
    from invlab.priors.checkpoint import build_net, load_checkpoint, save_checkpoint

    _, arch, card = load_checkpoint("ddpm_mnist")
    arch = {**arch, "channels": 8, "channel_mult": [1, 2], "attention_levels": [1], "groups": 4, "heads": 2}
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ddpm") / "untrained.safetensors", build_net(arch), arch,
                           {**card, "steps": 0})


def test_an_untrained_prior_is_flagged_suspect(tmp_path, random_ddpm):
    from invlab.engine.report import format_summary

    summary, rows = run(tmp_path, "untrained", "solver=dps", "solver.steps=20", "task=deblur", "prior=ddpm_mnist",
                        f"prior.checkpoint={random_ddpm}")
    assert [r["status"] for r in rows] == ["suspect"] * 4
    assert all(float(r["residual_ratio"]) > 1 for r in rows)
    assert summary["counts"] == {"suspect": 4}
    assert summary["metrics"]["psnr"]["n"] == 4            # suspect samples still count in the means
    assert "4 suspect sample(s)" in format_summary(summary)


def test_a_good_reconstruction_stays_ok(tmp_path):
    summary, rows = run(tmp_path, "good", "solver=pnp_hqs", "task=deblur", "prior=dncnn_mnist")
    assert summary["counts"] == {"ok": 4}
    assert all(0 < float(r["residual_ratio"]) < 1 and float(r["saturation"]) < 0.25 for r in rows)
    assert summary["metrics"]["psnr"]["mean"] > summary["metrics"]["psnr_input"]["mean"] + 2


# ---- the pieces -------------------------------------------------------------------------------------------
class Op:
    """y = A x with A a fixed dense matrix (numpy reference available), noise bound as Task does."""

    def __init__(self, mat, noise):
        self.mat, self.noise = torch.as_tensor(mat), noise

    def __call__(self, x):
        return x.flatten(1).to(self.mat.dtype) @ self.mat.T


def test_residual_ratio_matches_the_noise_model():
    from invlab.engine import consistency as c
    from invlab.ops.noise import Gaussian, LogisticDither, Poisson
    from invlab.ops.quantize import OneBitQuantized

    rng = np.random.default_rng(0)
    x = rng.random((2, 1, 6, 6))
    mat = rng.random((20, 36)) / 36
    y = x.reshape(2, -1) @ mat.T
    noise_g = rng.standard_normal(y.shape) * 0.03
    yg = y + noise_g
    rms = lambda a: np.sqrt((np.abs(a) ** 2).mean(1))
    want = rms(noise_g) / (3 * np.sqrt(0.03 ** 2 + (0.05 * rms(yg)) ** 2))
    got = c.residual_ratio(Op(mat, Gaussian(0.03)), torch.tensor(yg), torch.tensor(x))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    # complex measurements: σ² in each part, so E|n|² = 2σ²
    cmat = mat + 1j * rng.random((20, 36)) / 36
    nc = (rng.standard_normal(y.shape) + 1j * rng.standard_normal(y.shape)) * 0.03
    yc = x.reshape(2, -1) @ cmat.T + nc
    want = rms(nc) / (3 * np.sqrt(2 * 0.03 ** 2 + (0.05 * rms(yc)) ** 2))
    got = c.residual_ratio(Op(cmat, Gaussian(0.03)), torch.tensor(yc), torch.tensor(x))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    # Poisson: variance mean(y)/peak + σ_read²
    yp = rng.poisson(y * 50) / 50
    want = rms(yp - y) / (3 * np.sqrt(yp.mean(1) / 50 + 0.01 ** 2 + (0.05 * rms(yp)) ** 2))
    got = c.residual_ratio(Op(mat, Poisson(peak=50, sigma=0.01)), torch.tensor(yp), torch.tensor(x))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    # 1-bit: NLL per bit over log 2; the constant mid-grey image (logits 0) scores exactly 1
    A = OneBitQuantized((1, 6, 6))
    A.noise = LogisticDither()
    bits = torch.tensor(np.where(rng.random((2, 1, 6, 6)) < 0.5, 1.0, -1.0), dtype=torch.float32)
    np.testing.assert_allclose(c.residual_ratio(A, bits, torch.full((2, 1, 6, 6), 0.5)).numpy(), 1.0, rtol=1e-6)
    a = (2 * x - 1) / 0.4
    want = np.log1p(np.exp(-bits.numpy().astype(np.float64) * a)).reshape(2, -1).mean(1) / math.log(2)
    np.testing.assert_allclose(c.residual_ratio(A, bits, torch.tensor(x, dtype=torch.float32)).numpy(), want,
                               rtol=1e-5)


def test_saturation_and_the_suspect_rule():
    from invlab.engine.consistency import check_rows, is_suspect, saturation

    noise = (torch.rand(1, 1, 20, 20, generator=torch.Generator().manual_seed(0)) > 0.5).float()  # two-tone
    digit = torch.zeros(1, 1, 20, 20)
    digit[..., 8:12, 4:16] = 1.0                                                                  # 12 % white
    assert float(saturation(noise)) > 0.4 and float(saturation(digit)) == pytest.approx(48 / 400)
    assert is_suspect({"residual_ratio": 0.5, "saturation": 0.3}) and is_suspect({"residual_ratio": 1.5})
    assert not is_suspect({"residual_ratio": 0.9, "saturation": 0.12})
    assert not is_suspect({"residual_ratio": math.nan, "saturation": math.nan})   # diverged: its own status
    from invlab.ops.noise import Gaussian

    x = torch.stack([digit[0], torch.full((1, 20, 20), float("nan"))])
    rows = check_rows(Op(np.eye(400), Gaussian(0.1)), x.flatten(1).nan_to_num(0.5).double(), x,
                      torch.isfinite(x).flatten(1).all(1))
    assert rows[0]["residual_ratio"] == 0.0 and math.isnan(rows[1]["residual_ratio"])
    assert math.isnan(rows[1]["saturation"])
