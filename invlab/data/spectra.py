"""1-D NMR spectra. Each item is {"x": float32 (C=1, L) clean spectrum, "index": int} and, where the
dataset has them, "y" (the same spectrum with fixed seeded noise) and "sigma" (its noise level).

Scale convention for spectra (DESIGN.md, "Beyond 2-D images"): the real part of a phased spectrum,
divided by its largest line so that the clean spectrum's maximum is 1; dispersive phase errors and
baseline drift may make values negative, so spectra are *not* clamped to [0, 1]. Noise levels σ are in
the same units, so SNR = 1/σ (peak height over noise std).

- `nmr_synth`: sums of Lorentzian/Gaussian lines (pseudo-Voigt mixes) at random positions, widths,
  amplitudes and zero-order phase errors, a smooth random baseline, and white Gaussian noise with
  SNR log-uniform in [snr_min, snr_max] (or one fixed `snr`). The split (train/val/test) selects a
  disjoint seed stream, so the three sets never share a spectrum and are the same on every machine.
- `nmr_folder`: a user's real spectra read with nmrglue (NMRPipe files, Bruker or Varian/Agilent
  experiment folders), real part, resampled to `length` points, scaled to maximum 1.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from scipy.special import dawsn
from torch.utils.data import Dataset

from invlab.errors import ConfigError
from invlab.utils.config import whole_number

SPLITS = {"train": 0, "val": 1, "test": 2}


class SpectrumDataset(Dataset):
    """Spectra held in memory: clean (N, 1, L), optional noisy copies (N, 1, L) and their σ (N,)."""

    def __init__(self, clean: np.ndarray, noisy: np.ndarray | None = None, sigma: np.ndarray | None = None,
                 sources: list[str] | None = None):
        self.spectra = torch.as_tensor(np.asarray(clean, dtype=np.float32))[:, None, :].contiguous()
        self.noisy = None if noisy is None else torch.as_tensor(np.asarray(noisy, dtype=np.float32))[:, None, :]
        self.sigma = None if sigma is None else torch.as_tensor(np.asarray(sigma, dtype=np.float32))
        self.sources = sources

    @property
    def channels(self) -> int:
        return 1

    def __len__(self) -> int:
        return int(self.spectra.shape[0])

    def __getitem__(self, i: int) -> dict:
        item = {"x": self.spectra[i], "index": int(i)}
        if self.noisy is not None:
            item["y"], item["sigma"] = self.noisy[i], self.sigma[i]
        return item


def _line(t: np.ndarray, pos: float, fwhm: float, eta: float, phase: float) -> np.ndarray:
    """Real part of a phased pseudo-Voigt line (peak 1 when phase=0): η·Lorentzian + (1−η)·Gaussian, each
    absorption·cos φ − dispersion·sin φ (the Gaussian's dispersion is its Hilbert pair, via Dawson's F)."""
    g = fwhm / 2
    d = (t - pos) / g
    lor_abs, lor_dis = 1 / (1 + d**2), d / (1 + d**2)
    z = d * np.sqrt(np.log(2))
    gau_abs, gau_dis = np.exp(-z**2), 2 / np.sqrt(np.pi) * dawsn(z)
    absorption = eta * lor_abs + (1 - eta) * gau_abs
    dispersion = eta * lor_dis + (1 - eta) * gau_dis
    return absorption * np.cos(phase) - dispersion * np.sin(phase)


def synth_spectrum(rng: np.random.Generator, length: int, max_lines: int = 12, max_phase_deg: float = 10.0,
                   baseline: float = 0.05) -> np.ndarray:
    """One clean spectrum (length,), maximum 1."""
    t = np.linspace(0.0, 1.0, length)
    n_lines = int(rng.integers(1, max_lines + 1))
    spec = np.zeros(length)
    for _ in range(n_lines):
        fwhm = np.exp(rng.uniform(np.log(2.0 / length), np.log(12.0 / length)))  # 2-12 points wide
        amp = np.exp(rng.uniform(np.log(0.1), 0.0))
        phase = np.deg2rad(rng.uniform(-max_phase_deg, max_phase_deg))
        spec += amp * _line(t, rng.uniform(0.05, 0.95), fwhm, rng.uniform(0.0, 1.0), phase)
    coeffs = rng.uniform(-1, 1, size=3)  # drift: a quadratic plus one slow sinusoid
    drift = coeffs[0] + coeffs[1] * (t - 0.5) + coeffs[2] * (t - 0.5) ** 2 \
        + rng.uniform(-1, 1) * np.sin(2 * np.pi * rng.uniform(0.3, 2.0) * t + rng.uniform(0, 2 * np.pi))
    spec = spec / spec.max()
    spec = spec + baseline * drift / max(np.abs(drift).max(), 1e-12)
    return spec / spec.max()


def nmr_synth(split: str = "train", n: int = 4000, length: int = 512, snr_min: float = 5.0, snr_max: float = 100.0,
              snr: float | None = None, max_lines: int = 12, max_phase_deg: float = 10.0, baseline: float = 0.05,
              seed: int = 0, limit: int | None = None) -> SpectrumDataset:
    """`data=nmr_synth`: `n` synthetic spectra of `split` (train | val | test), each with fixed noise."""
    if split not in SPLITS:
        raise ConfigError(f"data.split must be train, val or test, got {split!r}.")
    n, length = whole_number(n, "data.n", minimum=1), whole_number(length, "data.length", minimum=8)
    seed = whole_number(seed, "data.seed", minimum=0)
    limit = whole_number(limit, "data.limit", minimum=1, allow_none=True)
    if snr is not None and not snr > 0:
        raise ConfigError(f"data.snr must be > 0 (peak height over noise std), got {snr}.")
    if snr is None and not 0 < snr_min <= snr_max:
        raise ConfigError(f"need 0 < data.snr_min <= data.snr_max, got {snr_min}, {snr_max}.")
    n = min(n, limit) if limit else n
    clean, noisy, sigma = [], [], []
    for i in range(n):  # one generator per spectrum: spectrum i is the same whatever n or limit
        rng = np.random.default_rng([int(seed), SPLITS[split], i])
        x = synth_spectrum(rng, length, max_lines, max_phase_deg, baseline)
        s = 1.0 / (snr if snr is not None else np.exp(rng.uniform(np.log(snr_min), np.log(snr_max))))
        clean.append(x)
        noisy.append(x + s * rng.standard_normal(length))
        sigma.append(s)
    return SpectrumDataset(np.stack(clean), np.stack(noisy), np.asarray(sigma))


def _read_one(path: str, fmt: str) -> np.ndarray:
    """A 1-D spectrum (real, frequency domain) from one NMRPipe file or Bruker/Varian folder."""
    import nmrglue as ng

    if fmt == "pipe":
        dic, data = ng.pipe.read(path)
        if int(dic.get("FDF2FTFLAG", 1)) == 0:  # still a time-domain FID: Fourier transform it
            data = np.fft.fftshift(np.fft.fft(data))
    elif fmt == "bruker":
        pdata = os.path.join(path, "pdata", "1")
        if os.path.isfile(os.path.join(pdata, "1r")):
            _, data = ng.bruker.read_pdata(pdata)
        else:
            dic, data = ng.bruker.read(path)
            data = ng.bruker.remove_digital_filter(dic, data)
            data = np.fft.fftshift(np.fft.fft(data))
    else:  # varian / agilent
        _, data = ng.varian.read(path)
        data = np.fft.fftshift(np.fft.fft(data))
    data = np.asarray(data)
    if data.ndim != 1:
        raise ConfigError(f"{path} holds a {data.ndim}-D spectrum; nmr_folder reads 1-D spectra only.")
    return np.real(data).astype(np.float64)


def _format_of(path: str) -> str | None:
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "acqus")):
            return "bruker"
        if os.path.isfile(os.path.join(path, "procpar")):
            return "varian"
        return None
    return "pipe" if path.lower().endswith((".fid", ".ft", ".ft1", ".pipe", ".dat")) else None


def nmr_folder(path: str, length: int | None = 512, limit: int | None = None) -> SpectrumDataset:
    """`data=nmr_folder data.path=...`: every NMRPipe file (.fid .ft .ft1 .pipe .dat) and Bruker/Varian
    experiment folder in `path` (sorted by name), real part, resampled to `length` points (None: keep;
    then all must match), each divided by its maximum."""
    root = os.path.expanduser(str(path)) if path else ""
    if not root or not os.path.isdir(root):
        raise ConfigError(f"data.path={path!r} is not a folder of NMR spectra; set data.path=/path/to/spectra.")
    length = whole_number(length, "data.length", minimum=8, allow_none=True)
    limit = whole_number(limit, "data.limit", minimum=1, allow_none=True)
    entries = [(name, _format_of(os.path.join(root, name))) for name in sorted(os.listdir(root))]
    entries = [(name, fmt) for name, fmt in entries if fmt is not None][:limit]
    if not entries:
        raise ConfigError(f"no NMR spectra (NMRPipe .fid/.ft/.ft1/.pipe/.dat files, Bruker or Varian folders) "
                          f"in data.path={path!r}.")
    spectra = []
    for name, fmt in entries:
        try:
            s = _read_one(os.path.join(root, name), fmt)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"cannot read {name} in {path!r} as a {fmt} spectrum with nmrglue ({exc}).") from exc
        if length is not None and s.shape[0] != length:
            s = np.interp(np.linspace(0, 1, length), np.linspace(0, 1, s.shape[0]), s)
        top = s.max()
        if not top > 0:
            raise ConfigError(f"{name} in {path!r} has no positive value to scale by (is it phased?).")
        spectra.append(s / top)
    if len({s.shape for s in spectra}) > 1:
        raise ConfigError(f"the spectra in {path!r} have different lengths; set data.length.")
    return SpectrumDataset(np.stack(spectra), sources=[name for name, _ in entries])
