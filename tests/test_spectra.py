"""1-D NMR spectra: the synthetic generator, the nmrglue folder reader, the 1-D CNN, the spectrum metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from invlab.data.spectra import _line, nmr_folder, nmr_synth
from invlab.errors import ConfigError
from invlab.nets.cnn1d import CNN1D
from invlab.utils.spectra import peak_errors, psnr_db, snr_db


def test_synthetic_spectra_are_seeded_split_and_scaled():
    a = nmr_synth(split="test", n=6, length=256)
    b = nmr_synth(split="test", n=3, length=256)
    assert a[0]["x"].shape == (1, 256) and a[0]["x"].dtype == torch.float32
    assert torch.equal(a.spectra[:3], b.spectra) and torch.equal(a.noisy[:3], b.noisy)  # same whatever n
    val = nmr_synth(split="val", n=6, length=256)
    assert not torch.allclose(val.spectra, a.spectra)                                  # disjoint streams
    assert torch.allclose(a.spectra.amax(-1), torch.ones(6, 1))                        # maximum 1
    assert bool(((a.sigma >= 1 / 100 - 1e-6) & (a.sigma <= 1 / 5 + 1e-6)).all())     # SNR in [5, 100]
    fixed = nmr_synth(split="test", n=4, length=4096, snr=20.0)
    resid = (fixed.noisy - fixed.spectra).flatten(1).std(1)
    assert torch.allclose(resid, torch.full((4,), 0.05), rtol=0.05)                    # σ = 1/SNR
    assert len(nmr_synth(split="train", n=10, length=64, limit=4)) == 4
    with pytest.raises(ConfigError, match="split"):
        nmr_synth(split="holdout")


def test_line_shapes():
    """Peak 1 at its position, half maximum at ±FWHM/2 (Lorentzian and Gaussian alike); a 90° phase turns
    the absorption line into its (odd) dispersion."""
    t = np.linspace(0, 1, 100001)
    for eta in (0.0, 1.0):
        line = _line(t, 0.5, 0.02, eta, 0.0)
        assert abs(line.max() - 1) < 1e-9 and abs(t[line.argmax()] - 0.5) < 1e-4
        assert np.interp(0.51, t, line) == pytest.approx(0.5, abs=1e-4)
    lor = _line(t, 0.5, 0.02, 1.0, math.pi / 2)
    d = (t - 0.5) / 0.01
    assert np.allclose(lor, -d / (1 + d**2), atol=1e-12)


def test_nmr_folder_reads_an_nmrpipe_file_written_by_nmrglue(tmp_path):
    import nmrglue as ng

    data = np.exp(-((np.arange(300) - 120) / 6.0) ** 2).astype(np.float32) * 7 + 0.3
    udic = ng.fileiobase.create_blank_udic(1)
    udic[0].update(size=300, complex=False, freq=True, time=False, sw=5000.0, obs=500.0, car=2350.0, label="1H")
    dic = ng.pipe.create_dic(udic)
    ng.pipe.write(str(tmp_path / "a.ft1"), dic, data)
    ng.pipe.write(str(tmp_path / "b.ft1"), dic, data[::-1].copy())
    (tmp_path / "notes.txt").write_text("not a spectrum")
    ds = nmr_folder(str(tmp_path), length=None)
    assert len(ds) == 2 and ds.sources == ["a.ft1", "b.ft1"]
    assert np.allclose(ds[0]["x"][0].numpy(), data / data.max(), atol=1e-6)
    assert np.allclose(ds[1]["x"][0].numpy(), data[::-1] / data.max(), atol=1e-6)
    resampled = nmr_folder(str(tmp_path), length=150)
    assert resampled[0]["x"].shape == (1, 150)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no NMR spectra"):
        nmr_folder(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="not a folder"):
        nmr_folder(str(tmp_path / "missing"))


def test_cnn1d_shapes_and_condition():
    y = torch.randn(3, 1, 64)
    plain, cond = CNN1D(depth=4, features=8), CNN1D(depth=4, features=8, condition=True)
    assert plain(y).shape == y.shape and cond(y, y.clone()).shape == y.shape
    assert plain.body[0].in_channels == 1 and cond.body[0].in_channels == 2
    assert sum(p.numel() for p in cond.parameters()) - sum(p.numel() for p in plain.parameters()) == 8 * 5
    with pytest.raises(ValueError, match="cond"):
        cond(y)


def test_spectrum_metrics_against_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 100))
    e = x + 0.1 * rng.standard_normal(x.shape)
    snr = 10 * np.log10((x**2).sum((1, 2)) / ((e - x) ** 2).sum((1, 2)))
    psnr = 10 * np.log10(np.abs(x).max((1, 2)) ** 2 / ((e - x) ** 2).mean((1, 2)))
    assert np.allclose(snr_db(torch.tensor(e), torch.tensor(x)).numpy(), snr, atol=1e-4)
    assert np.allclose(psnr_db(torch.tensor(e), torch.tensor(x)).numpy(), psnr, atol=1e-4)
    t = np.linspace(0, 1, 400)
    truth = torch.tensor(_line(t, 0.3, 0.01, 1.0, 0.0) + 0.5 * _line(t, 0.7, 0.01, 0.0, 0.0))[None, None]
    shifted = 0.9 * torch.roll(truth, 2, dims=-1)    # every line 2 points later and 10 % lower
    pos, height = peak_errors(shifted, truth)
    assert float(pos) == pytest.approx(2.0) and float(height) == pytest.approx(0.1, abs=1e-3)
