"""invlab's SSIM (invlab/engine/metrics.py) against an independent NumPy/SciPy implementation of the
documented convention, cross-checked against scikit-image.

The reference below is written from the convention, not from the code: a k×k Gaussian window
(σ_w = 1.5, k = 11; on smaller images the largest odd k ≤ min(H, W) and σ_w = 1.5·k/11), SciPy's
`correlate` with mode="mirror" (d c b | a b c d) for the border, the SSIM map averaged over all pixels,
C1 = 0.01², C2 = 0.03², population (co)variances, per-channel maps averaged. scikit-image averages only
the positions where the window fits and pads differently, so it is compared on those interior positions
only, where the two conventions must agree exactly. Tolerance: 1e-5 on the mean SSIM (invlab computes in
float64; what is left is rounding).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data as skdata
from skimage.metrics import structural_similarity
from skimage.transform import resize

from invlab.engine.metrics import image_scores, ssim, ssim_window


def gaussian_window(k: int, sigma: float) -> np.ndarray:
    t = np.arange(k) - (k - 1) / 2
    g = np.exp(-t**2 / (2 * sigma**2))
    g /= g.sum()
    return np.outer(g, g)


def ssim_map_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM map of two 2-D float64 images in [0, 1] by the documented convention."""
    k = min(11, *a.shape)
    k -= 1 - k % 2
    w = gaussian_window(k, 1.5 * k / 11)

    def f(z):
        return ndimage.correlate(z, w, mode="mirror")

    mu_a, mu_b = f(a), f(b)
    var_a = np.maximum(f(a * a) - mu_a**2, 0.0)
    var_b = np.maximum(f(b * b) - mu_b**2, 0.0)
    cov = f(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    return (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """(C, H, W) images: the mean over channels and pixels of the per-channel maps."""
    return float(np.mean([ssim_map_reference(a[c], b[c]) for c in range(a.shape[0])]))


def degraded(x: np.ndarray, seed: int) -> np.ndarray:
    """A blurred, noisy, clipped copy: SSIM well inside (0, 1)."""
    rng = np.random.default_rng(seed)
    blurred = np.stack([ndimage.gaussian_filter(c, 1.0, mode="wrap") for c in x])
    return np.clip(blurred + 0.08 * rng.standard_normal(x.shape), 0, 1)


def make_images() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    from invlab.data.datasets import mnist

    camera = resize(skdata.camera().astype(np.float64) / 255, (96, 80), anti_aliasing=True)
    astro = resize(skdata.astronaut().astype(np.float64) / 255, (40, 48), anti_aliasing=True)
    digits = mnist(split="test", size=28, limit=2)
    return {
        "gray 96x80": camera[None],
        "colour 40x48": astro.transpose(2, 0, 1),
        "gray 28x28 digit": np.asarray(digits[1]["x"], dtype=np.float64),
        "colour 28x28": resize(skdata.astronaut()[100:300, 150:350] / 255.0, (28, 28)).transpose(2, 0, 1),
        "gray 8x8 digit": load_digits().images[3][None] / 16.0,
        "gray 9x13": camera[40:49, 30:43][None],
    }


IMAGES = make_images()


@pytest.mark.parametrize("name", list(IMAGES))
def test_ssim_matches_the_reference_convention(name):
    x = IMAGES[name]
    y = degraded(x, seed=len(name))
    expected = ssim_reference(y, x)
    for dtype in (torch.float32, torch.float64):
        got = ssim(torch.tensor(y, dtype=dtype)[None], torch.tensor(x, dtype=dtype)[None])
        assert got.shape == (1,) and got.dtype == dtype
        assert abs(float(got) - expected) < 1e-5, (name, dtype, float(got), expected)
    assert 0.05 < expected < 0.95                      # a nontrivial pair
    assert float(ssim(torch.tensor(x)[None], torch.tensor(x)[None])) == pytest.approx(1.0, abs=1e-12)


def test_small_images_use_the_shrunk_window():
    """On 8×8 digits the 7×7 window (σ_w = 0.95) is what is computed, not torchmetrics' 11×11 default."""
    assert [ssim_window(*s) for s in ((64, 64), (28, 28), (8, 8), (9, 13), (3, 40))] == \
        [(11, 1.5), (11, 1.5), (7, 1.5 * 7 / 11), (9, 1.5 * 9 / 11), (3, 1.5 * 3 / 11)]
    x = IMAGES["gray 8x8 digit"]
    y = degraded(x, seed=1)
    got = float(ssim(torch.tensor(y)[None], torch.tensor(x)[None]))
    w = gaussian_window(11, 1.5)   # the 11-tap window on the same 8×8 pair (what the old code computed)
    f = lambda z: ndimage.correlate(z, w, mode="mirror")  # noqa: E731
    a, b = y[0], x[0]
    mu_a, mu_b = f(a), f(b)
    old = np.mean((2 * mu_a * mu_b + 1e-4) * (2 * (f(a * b) - mu_a * mu_b) + 9e-4)
                  / ((mu_a**2 + mu_b**2 + 1e-4) * (f(a * a) - mu_a**2 + f(b * b) - mu_b**2 + 9e-4)))
    assert abs(got - ssim_reference(y, x)) < 1e-5 and abs(got - old) > 1e-2


@pytest.mark.parametrize("name", ["gray 96x80", "colour 40x48", "gray 28x28 digit"])
def test_reference_interior_equals_scikit_image(name):
    """Where the window fits inside the image the padding does not matter: the maps must be equal."""
    x = IMAGES[name]
    y = degraded(x, seed=7)
    k, sigma = ssim_window(*x.shape[-2:])
    r = (k - 1) // 2
    for c in range(x.shape[0]):
        _, full = structural_similarity(y[c], x[c], data_range=1.0, gaussian_weights=True, sigma=sigma,
                                        use_sample_covariance=False, full=True)
        ours = ssim_map_reference(y[c], x[c])
        np.testing.assert_allclose(ours[r:-r, r:-r], full[r:-r, r:-r], rtol=0, atol=1e-10)
    # the whole-image means differ by the border: scikit-image's is the interior mean
    sk = structural_similarity(y, x, data_range=1.0, gaussian_weights=True, sigma=sigma,
                               use_sample_covariance=False, channel_axis=0)
    interior = np.mean([ssim_map_reference(y[c], x[c])[r:-r, r:-r].mean() for c in range(x.shape[0])])
    assert sk == pytest.approx(interior, abs=1e-10)


def test_colour_is_the_mean_of_the_channels_and_image_scores_clamps():
    x = IMAGES["colour 40x48"]
    y = degraded(x, seed=3)
    t = torch.tensor(np.stack([y, x]))
    per_channel = [float(ssim(t[:1, c:c + 1], t[1:, c:c + 1])) for c in range(3)]
    assert float(ssim(t[:1], t[1:])) == pytest.approx(np.mean(per_channel), abs=1e-12)
    over = torch.tensor(y)[None] * 3 - 1                 # far outside [0, 1]: scored after clamping
    psnr, s = image_scores(over, torch.tensor(x)[None])
    mse = np.mean((np.clip(y * 3 - 1, 0, 1) - x) ** 2)
    assert float(psnr) == pytest.approx(10 * np.log10(1 / mse), abs=1e-4)
    assert float(s) == pytest.approx(ssim_reference(np.clip(y * 3 - 1, 0, 1), x), abs=1e-5)
